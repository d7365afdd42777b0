//! The config file and the environment, derived from the command line's own definitions.
//!
//! A server command's flags are its settings; the config file (`--config wsedge.toml`) and
//! the environment are two more ways to give them, with no second list of settings to keep
//! in step: a key of the file is a flag's long name (`max-connections = 20000`), and every
//! flag can also come from `WSEDGE_<NAME>` (`WSEDGE_MAX_CONNECTIONS=20000`). A flag added to
//! the CLI is a key and a variable at once, and `wsedge config --print-defaults` lists it.
//!
//! Precedence: command line > environment > file > defaults. The file is applied by
//! turning each of its keys that neither the command line nor the environment set into one
//! more command-line argument, after checking it with the flag's own value parser, so an
//! unknown key or a bad value is a startup error that names the key.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

/// Prefix of the environment variables: `WSEDGE_` + the flag's long name in upper case,
/// `-` as `_`.
pub const ENV_PREFIX: &str = "WSEDGE_";

/// The flag that names the config file: not itself a key of the file.
pub const CONFIG_FLAG: &str = "config";

/// `WSEDGE_MAX_CONNECTIONS` for `max-connections`.
pub fn env_name(long: &str) -> String {
    format!("{ENV_PREFIX}{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// Flags that are settings: every long flag but `--help`, `--version`, `--config` and
/// hidden ones.
fn settings(cmd: &Command) -> impl Iterator<Item = (&Arg, &str)> {
    cmd.get_arguments().filter(|a| !a.is_hide_set()).filter_map(|a| {
        let long = a.get_long()?;
        let builtin = matches!(a.get_action(), ArgAction::Help | ArgAction::HelpLong | ArgAction::Version);
        (!builtin && long != CONFIG_FLAG).then_some((a, long))
    })
}

/// Gives every setting of `cmd` its `WSEDGE_<NAME>` environment variable, unless the flag
/// declares one of its own.
pub fn with_env(cmd: Command) -> Command {
    cmd.mut_args(|arg| {
        let setting = arg.get_action().takes_values() || matches!(arg.get_action(), ArgAction::SetTrue);
        match arg.get_long() {
            Some(long) if setting && long != CONFIG_FLAG && arg.get_env().is_none() => {
                let name = env_name(long);
                arg.env(name)
            }
            _ => arg,
        }
    })
}

/// A config file that cannot be used; the message names the file and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Reads the config file at `path` for `cmd` (a built server subcommand) and returns the
/// settings it gives that `matches` (the command line and environment) leave at their
/// defaults, as extra arguments (`--name=value`) to parse after the command line.
pub fn file_args(cmd: &Command, matches: &ArgMatches, path: &Path) -> Result<Vec<OsString>, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))?;
    args_from_toml(cmd, matches, &text).map_err(|e| ConfigError(format!("config file {}: {}", path.display(), e.0)))
}

/// A TOML syntax error by line and column, without the line itself (toml's own message
/// quotes it, and it may hold a secret).
fn syntax_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("TOML syntax error at line {line}, column {column}: {message}")
        }
        None => format!("TOML syntax error: {message}"),
    }
}

/// [`file_args`] on the file's text.
pub fn args_from_toml(cmd: &Command, matches: &ArgMatches, text: &str) -> Result<Vec<OsString>, ConfigError> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError(syntax_error(text, &e)))?;
    let mut args = Vec::new();
    for (key, value) in &table {
        let Some((arg, long)) = settings(cmd).find(|(_, long)| long == key) else {
            return Err(ConfigError(format!(
                "unknown key `{key}` (the keys are the long flags of `{}`; `wsedge config --print-defaults` lists them)",
                cmd.get_name()
            )));
        };
        let id = arg.get_id().as_str();
        if matches!(matches.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
            continue;
        }
        let bad = |why: &str| ConfigError(format!("key `{key}`: {why}"));
        match arg.get_action() {
            ArgAction::SetTrue => match value {
                toml::Value::Boolean(true) => args.push(OsString::from(format!("--{long}"))),
                toml::Value::Boolean(false) => {}
                _ => return Err(bad("expected true or false")),
            },
            ArgAction::Append => {
                let items: &[toml::Value] = match value {
                    toml::Value::Array(items) => items,
                    one => std::slice::from_ref(one),
                };
                for item in items {
                    args.push(checked(cmd, arg, long, item).map_err(|why| bad(&why))?);
                }
            }
            _ => args.push(checked(cmd, arg, long, value).map_err(|why| bad(&why))?),
        }
    }
    Ok(args)
}

/// `--long=value` for one scalar value, checked with the flag's value parser.
fn checked(cmd: &Command, arg: &Arg, long: &str, value: &toml::Value) -> Result<OsString, String> {
    let text = match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(_) => return Err("a list, where one value is expected".to_owned()),
        toml::Value::Table(_) => return Err("a table, where a value is expected".to_owned()),
        toml::Value::Datetime(_) => return Err("a date, where a value is expected".to_owned()),
    };
    // The flag's own parser, on a command of that one flag (clap has no public way to run
    // a value parser alone). The flag is rebuilt from its parser and action only: its
    // relations to other flags (`requires`, `conflicts_with`) would name flags this
    // command lacks, which clap treats as a bug and panics on.
    let flag = format!("--{long}={text}");
    let mut lone_arg = Arg::new(arg.get_id().clone())
        .long(long.to_owned())
        .value_parser(arg.get_value_parser().clone())
        .action(arg.get_action().clone());
    if let Some(range) = arg.get_num_args() {
        lone_arg = lone_arg.num_args(range);
    }
    let alone = Command::new(cmd.get_name().to_owned()).no_binary_name(true).arg(lone_arg);
    if let Err(e) = alone.try_get_matches_from([flag.as_str()]) {
        // clap's message starts with "error: " and ends with a usage hint: keep the reason.
        let message = e.to_string();
        let first = message.lines().next().unwrap_or_default();
        return Err(first.trim_start_matches("error: ").to_owned());
    }
    Ok(OsString::from(flag))
}

/// A complete config file for `cmd` (a built server subcommand): every setting with its
/// help, its environment variable and its default; settings without a default are
/// commented out.
pub fn defaults_file(cmd: &Command) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# wsedge {} configuration: `wsedge {} --config FILE`.", cmd.get_name(), cmd.get_name());
    out.push_str(
        "# Every key is a long flag of the command line; each can also be set in the environment\n\
         # (the variable is named beside it). Precedence: command line > environment > this file >\n\
         # the defaults shown here. An unknown key or a bad value stops the server at startup.\n",
    );
    for (arg, long) in settings(cmd) {
        out.push('\n');
        let help = arg.get_long_help().or(arg.get_help()).map(|h| h.to_string()).unwrap_or_default();
        for paragraph in help.lines() {
            wrap_comment(&mut out, paragraph, 90);
        }
        if let Some(env) = arg.get_env() {
            let _ = writeln!(out, "# env: {}", env.to_string_lossy());
        }
        let defaults = arg.get_default_values();
        match arg.get_action() {
            ArgAction::SetTrue => {
                let _ = writeln!(out, "{long} = false");
            }
            ArgAction::Append => {
                let values: Vec<String> = defaults.iter().map(|v| toml_value(&v.to_string_lossy())).collect();
                if values.is_empty() {
                    let _ = writeln!(out, "# {long} = []  (a list; unset by default)");
                } else {
                    let _ = writeln!(out, "{long} = [{}]", values.join(", "));
                }
            }
            _ => match defaults.first() {
                Some(value) => {
                    let _ = writeln!(out, "{long} = {}", toml_value(&value.to_string_lossy()));
                }
                None => {
                    let _ = writeln!(out, "# {long} =  (unset by default)");
                }
            },
        }
    }
    out
}

/// `text` as `# ` comment lines of at most `width` columns (a longer word stays whole).
fn wrap_comment(out: &mut String, text: &str, width: usize) {
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() > 1 && line.len() + 1 + word.len() > width {
            out.push_str(&line);
            out.push('\n');
            line.truncate(1);
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

/// A default as TOML: a number where it reads as one, a quoted string otherwise. (Either
/// works when read back: values are parsed by the flag, from their text.)
fn toml_value(text: &str) -> String {
    let numeric = text.parse::<i64>().is_ok() || (text.parse::<f64>().is_ok_and(f64::is_finite) && text.contains('.'));
    if numeric {
        text.to_owned()
    } else {
        toml::Value::String(text.to_owned()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{value_parser, Arg};

    fn command() -> Command {
        let cmd = Command::new("serve")
            .arg(Arg::new("listen").long("listen").default_value("127.0.0.1:9001").help("Address to listen on."))
            .arg(
                Arg::new("max-connections")
                    .long("max-connections")
                    .value_parser(value_parser!(usize))
                    .default_value("10000"),
            )
            .arg(Arg::new("no-deflate").long("no-deflate").action(ArgAction::SetTrue).help("Turn deflate off."))
            .arg(Arg::new("allowed-origin").long("allowed-origin").action(ArgAction::Append))
            .arg(Arg::new("workers").long("workers").value_parser(value_parser!(u16).range(1..=64)))
            .arg(Arg::new("secret").long("secret").env("MY_SECRET"))
            .arg(Arg::new("cert").long("cert").requires("key").conflicts_with("listen-fd"))
            .arg(Arg::new("key").long("key").requires("cert"))
            .arg(Arg::new("listen-fd").long("listen-fd").value_parser(value_parser!(u32)))
            .arg(Arg::new(CONFIG_FLAG).long(CONFIG_FLAG));
        let mut cmd = with_env(cmd);
        cmd.build();
        cmd
    }

    fn apply(text: &str, argv: &[&str]) -> Result<ArgMatches, ConfigError> {
        let cmd = command();
        let first = cmd.clone().try_get_matches_from(std::iter::once("serve").chain(argv.iter().copied())).unwrap();
        let extra = args_from_toml(&cmd, &first, text)?;
        let all: Vec<OsString> =
            std::iter::once(OsString::from("serve")).chain(argv.iter().map(OsString::from)).chain(extra).collect();
        Ok(cmd.try_get_matches_from(all).unwrap())
    }

    #[test]
    fn env_names_follow_the_flag() {
        assert_eq!(env_name("max-conns-per-ip"), "WSEDGE_MAX_CONNS_PER_IP");
        let cmd = command();
        let env =
            |id: &str| cmd.get_arguments().find(|a| a.get_id() == id).and_then(|a| a.get_env()).map(|e| e.to_owned());
        assert_eq!(env("listen").unwrap(), "WSEDGE_LISTEN");
        assert_eq!(env("no-deflate").unwrap(), "WSEDGE_NO_DEFLATE");
        assert_eq!(env("secret").unwrap(), "MY_SECRET", "a flag's own variable is kept");
        assert_eq!(env(CONFIG_FLAG), None);
    }

    #[test]
    fn file_values_fill_what_the_command_line_left_at_defaults() {
        let m = apply(
            "listen = \"0.0.0.0:80\"\nmax-connections = 5\nno-deflate = true\nallowed-origin = [\"https://a\", \"https://b\"]\nworkers = 3\n",
            &[],
        )
        .unwrap();
        assert_eq!(m.get_one::<String>("listen").unwrap(), "0.0.0.0:80");
        assert_eq!(*m.get_one::<usize>("max-connections").unwrap(), 5);
        assert!(m.get_flag("no-deflate"));
        let origins: Vec<&String> = m.get_many::<String>("allowed-origin").unwrap().collect();
        assert_eq!(origins, ["https://a", "https://b"]);
        assert_eq!(*m.get_one::<u16>("workers").unwrap(), 3);
    }

    #[test]
    fn the_command_line_wins_over_the_file() {
        let m = apply(
            "listen = \"0.0.0.0:80\"\nallowed-origin = [\"https://file\"]\n",
            &["--listen", "1.2.3.4:5", "--allowed-origin", "https://cli"],
        )
        .unwrap();
        assert_eq!(m.get_one::<String>("listen").unwrap(), "1.2.3.4:5");
        let origins: Vec<&String> = m.get_many::<String>("allowed-origin").unwrap().collect();
        assert_eq!(origins, ["https://cli"], "a list on the command line replaces the file's");
    }

    #[test]
    fn false_and_absent_keys_keep_the_defaults() {
        let m = apply("no-deflate = false\n", &[]).unwrap();
        assert!(!m.get_flag("no-deflate"));
        assert_eq!(*m.get_one::<usize>("max-connections").unwrap(), 10_000);
        assert_eq!(m.get_one::<u16>("workers"), None);
    }

    #[test]
    fn flags_tied_to_other_flags_are_checked_alone_then_together() {
        // Each value is checked on its own (where `requires` would name a missing flag),
        // then the whole command line, file values included, is parsed with its relations.
        let m = apply("cert = \"c.pem\"\nkey = \"k.pem\"\n", &[]).unwrap();
        assert_eq!(m.get_one::<String>("cert").unwrap(), "c.pem");
        let e = apply("listen-fd = \"three\"\n", &[]).unwrap_err().0;
        assert!(e.contains("key `listen-fd`") && e.contains("three"), "{e}");
        let cmd = command();
        let first = cmd.clone().try_get_matches_from(["serve"]).unwrap();
        let extra = args_from_toml(&cmd, &first, "cert = \"c.pem\"\n").unwrap();
        let all = std::iter::once(OsString::from("serve")).chain(extra);
        assert!(cmd.try_get_matches_from(all).is_err(), "a cert without its key is refused by the full parse");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = |text: &str| apply(text, &[]).unwrap_err().0;
        assert!(err("max-conections = 5\n").contains("unknown key `max-conections`"));
        assert!(err("config = \"other.toml\"\n").contains("unknown key `config`"));
        assert!(err("help = true\n").contains("unknown key `help`"));
        let e = err("max-connections = \"lots\"\n");
        assert!(e.contains("key `max-connections`") && e.contains("lots"), "{e}");
        let e = err("workers = 65\n");
        assert!(e.contains("key `workers`") && e.contains("65"), "{e}");
        assert!(err("no-deflate = \"yes\"\n").contains("key `no-deflate`: expected true or false"));
        assert!(err("max-connections = [1, 2]\n").contains("key `max-connections`: a list"));
        assert!(err("[limits]\nmax-connections = 1\n").contains("unknown key `limits`"));
        assert!(err("listen = { a = 1 }\n").contains("key `listen`: a table"));
        let e = err("listen = \n");
        assert!(e.contains("line 1"), "TOML syntax errors say where: {e}");
        let e = err("listen = \"a\"\njwt-secret = \"s3cret-value\\q\"\n");
        assert!(e.contains("line 2") && !e.contains("s3cret"), "no source line quoted: {e}");
    }

    #[test]
    fn the_defaults_file_lists_every_setting_and_reads_back_to_the_defaults() {
        let cmd = command();
        let text = defaults_file(&cmd);
        for key in ["listen", "max-connections", "no-deflate", "allowed-origin", "workers", "secret"] {
            assert!(
                text.lines().any(|l| l.starts_with(key) || l.starts_with(&format!("# {key} ="))),
                "{key} missing:\n{text}"
            );
        }
        assert!(!text.lines().any(|l| l.starts_with("config") || l.starts_with("help")));
        assert!(
            text.contains("# Address to listen on.\n# env: WSEDGE_LISTEN\nlisten = \"127.0.0.1:9001\"\n"),
            "{text}"
        );
        assert!(text.contains("max-connections = 10000\n"));
        assert!(text.lines().all(|l| l.len() <= 90 || !l.contains(' ')), "comments are wrapped:\n{text}");
        let m = apply(&text, &[]).unwrap();
        assert_eq!(m.value_source("listen"), Some(ValueSource::CommandLine), "the file's values are applied");
        assert_eq!(m.get_one::<String>("listen").unwrap(), "127.0.0.1:9001");
        assert_eq!(*m.get_one::<usize>("max-connections").unwrap(), 10_000);
    }
}
