//! Command-line helpers shared by the binaries.

use clap::Parser;
use clap::error::ErrorKind;

/// Parses the command line; on a usage error prints one line,
/// `PROGRAM: <problem> (see 'PROGRAM --help')`, and exits 2. `--help` and
/// `--version` print as usual and exit 0.
pub fn parse_or_exit<T: Parser>(program: &str) -> T {
    T::try_parse().unwrap_or_else(|e| {
        if matches!(
            e.kind(),
            ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        ) {
            e.exit();
        }
        eprintln!(
            "{program}: {} (see '{program} --help')",
            one_line(&e.to_string())
        );
        std::process::exit(2)
    })
}

/// Clap's message up to its usage section, on one line.
fn one_line(message: &str) -> String {
    let words: Vec<&str> = message
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    words.join(" ").trim_start_matches("error: ").to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn clap_messages_become_one_line() {
        let msg = "error: the following required arguments were not provided:\n  <TO>\n\nUsage: raftctl cas <KEY> <FROM> <TO>\n";
        assert_eq!(
            super::one_line(msg),
            "the following required arguments were not provided: <TO>"
        );
    }
}
