//! The examples' one command-line parser: `--NAME VALUE` options and bare
//! `--NAME` flags, each a name the program takes; anything else is refused
//! with the list of what is.

use std::collections::HashMap;
use std::str::FromStr;

/// A parsed command line.
pub(crate) struct Args {
    values: HashMap<String, String>,
    flags: Vec<String>,
}

impl Args {
    /// Parses `args` (the command line after the program's name, or after
    /// its subcommand): `options` take a value, `flags` do not. The last of
    /// a repeated option wins.
    pub(crate) fn parse(
        args: impl IntoIterator<Item = String>,
        options: &[&str],
        flags: &[&str],
    ) -> Result<Args, String> {
        let mut parsed = Args {
            values: HashMap::new(),
            flags: Vec::new(),
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let name = arg.strip_prefix("--").unwrap_or_default();
            if flags.contains(&name) {
                parsed.flags.push(name.to_owned());
                continue;
            }
            if !options.contains(&name) {
                let known: Vec<String> = (flags.iter().map(|f| format!("--{f}")))
                    .chain(options.iter().map(|o| format!("--{o} VALUE")))
                    .collect();
                return Err(format!(
                    "unknown argument {arg:?}; options: {}",
                    known.join(" ")
                ));
            }
            let value = args
                .next()
                .ok_or_else(|| format!("--{name} needs a value"))?;
            parsed.values.insert(name.to_owned(), value);
        }
        Ok(parsed)
    }

    /// The value of `--name`, if given.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The value of `--name` parsed as a `T`, else `default`.
    pub(crate) fn parsed<T: FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        self.get(name).map_or(Ok(default), |text| {
            text.parse()
                .map_err(|_| format!("--{name}: cannot parse {text:?}"))
        })
    }

    /// Whether the flag `--name` was given.
    pub(crate) fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }
}
