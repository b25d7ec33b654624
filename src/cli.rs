//! Command-line helpers shared by the binaries.

use clap::Parser;
use clap::error::ErrorKind;

/// Parses the command line; on a usage error prints one line,
/// `PROGRAM: <problem>; tip: <clap's tip, if any> (see 'PROGRAM SUBCOMMAND
/// --help')`, and exits 2. `--help` and `--version` print as usual and
/// exit 0.
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
        eprintln!("{}", one_line(program, &e.to_string()));
        std::process::exit(2)
    })
}

/// Clap's message on one line: the problem, its tips ("a similar
/// subcommand exists: 'status'"), and the help of the command whose
/// usage it shows (`raftctl cas --help` for a missing `<TO>`).
fn one_line(program: &str, message: &str) -> String {
    let mut paragraphs = message.split("\n\n").map(|p| {
        p.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    });
    let problem = paragraphs.next().unwrap_or_default();
    let mut line = format!("{program}: {}", problem.trim_start_matches("error: "));
    let mut command = program.to_string();
    for p in paragraphs {
        if p.starts_with("tip:") {
            line.push_str("; ");
            line.push_str(&p);
        } else if let Some(usage) = p.strip_prefix("Usage: ") {
            let words: Vec<&str> = usage
                .split_whitespace()
                .take_while(|w| !w.starts_with(['[', '<', '-']))
                .collect();
            if !words.is_empty() {
                command = words.join(" ");
            }
        }
    }
    format!("{line} (see '{command} --help')")
}

#[cfg(test)]
mod tests {
    #[test]
    fn clap_messages_become_one_line_pointing_at_the_subcommands_help() {
        let msg = "error: the following required arguments were not provided:\n  <TO>\n\nUsage: raftctl cas <KEY> <FROM> <TO>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            super::one_line("raftctl", msg),
            "raftctl: the following required arguments were not provided: <TO> (see 'raftctl cas --help')"
        );
    }

    #[test]
    fn clap_tips_are_kept() {
        let msg = "error: unrecognized subcommand 'stauts'\n\n  tip: a similar subcommand exists: 'status'\n\nUsage: raftctl [OPTIONS] <COMMAND>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            super::one_line("raftctl", msg),
            "raftctl: unrecognized subcommand 'stauts'; tip: a similar subcommand exists: 'status' (see 'raftctl --help')"
        );
    }
}
