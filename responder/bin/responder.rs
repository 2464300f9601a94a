//! `responder`: replay findings, validate playbooks, print the playbook schema.
//! A thin shell over the library: everything it prints comes from the same `decide` path the
//! Lambda uses.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use responder::event::EventError;
use responder::playbook::{self, Mode, PlaybookSet};
use responder::report::Report;

#[derive(Parser)]
#[command(
    name = "responder",
    version,
    about = "Contain, preserve and report GuardDuty Runtime Monitoring findings"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Decide (and with --dry-run, only decide) what to do about recorded events.
    Replay {
        /// Event files (EventBridge events or bare GuardDuty findings); `-` reads stdin.
        #[arg(required = true)]
        events: Vec<PathBuf>,
        /// Playbook directory or file (default: the playbooks built into the binary).
        #[arg(long, env = "RESPONDER_PLAYBOOKS_PATH")]
        playbooks: Option<PathBuf>,
        /// Print the plan only; make no AWS call.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Check playbooks: exit 0 when valid, 1 with every problem listed otherwise.
    Validate {
        /// Playbook directory or file (default: the playbooks built into the binary).
        path: Option<PathBuf>,
    },
    /// Print the JSON Schema of the playbook format.
    Schema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Replay {
            events,
            playbooks,
            dry_run,
            output,
        } => replay(&events, playbooks.as_deref(), dry_run, output),
        Command::Validate { path } => validate(path.as_deref()),
        Command::Schema => {
            let schema = playbook::json_schema();
            match serde_json::to_string_pretty(&schema) {
                Ok(text) => print_or_exit(&format!("{text}\n")),
                Err(e) => {
                    eprintln!("error: cannot render the schema: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn load_playbooks(path: Option<&Path>) -> Result<PlaybookSet, ExitCode> {
    let loaded = match path {
        Some(path) => PlaybookSet::load_path(path),
        None => PlaybookSet::defaults(),
    };
    loaded.map_err(|errors| {
        eprintln!("error: the playbooks are invalid:\n{errors}");
        ExitCode::FAILURE
    })
}

fn validate(path: Option<&Path>) -> ExitCode {
    match load_playbooks(path) {
        Ok(set) => print_or_exit(&format!(
            "ok: {} rule(s) in {}\n",
            set.rules.len(),
            set.sources.join(", ")
        )),
        Err(code) => code,
    }
}

fn replay(events: &[PathBuf], playbooks: Option<&Path>, dry_run: bool, output: Output) -> ExitCode {
    let set = match load_playbooks(playbooks) {
        Ok(set) => set,
        Err(code) => return code,
    };
    if !dry_run {
        eprintln!("error: executing plans against AWS is not available yet; pass --dry-run to print the plan");
        return ExitCode::FAILURE;
    }
    let mut any_error = false;
    let mut stdout = anstream::stdout();
    for path in events {
        let label = path.display().to_string();
        let report = match read_event(path) {
            Ok(bytes) => responder::decide(Some(label), &bytes, &set, Mode::DryRun).0,
            Err(error) => Report::for_error(Some(label), &error),
        };
        any_error |= report.is_error();
        let text = match output {
            Output::Json => format!("{}\n", report.to_json_line()),
            Output::Text => report.to_text(),
        };
        if let Some(error) = &report.error {
            eprintln!(
                "error: {}: {error}",
                report.input.as_deref().unwrap_or("event")
            );
        }
        if stdout.write_all(text.as_bytes()).is_err() {
            // stdout closed (e.g. piped into `head`): nothing more can be shown.
            return ExitCode::from(2);
        }
    }
    if any_error {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn read_event(path: &Path) -> Result<Vec<u8>, EventError> {
    let limit = responder::event::MAX_EVENT_BYTES as u64 + 1;
    let mut bytes = Vec::new();
    let result = if path.as_os_str() == "-" {
        std::io::stdin().take(limit).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(limit).read_to_end(&mut bytes))
    };
    result.map_err(|e| EventError::Unreadable(format!("{}: {e}", path.display())))?;
    Ok(bytes)
}

/// Print to stdout; a closed pipe (`| head`) is not worth a panic.
fn print_or_exit(text: &str) -> ExitCode {
    match anstream::stdout().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
