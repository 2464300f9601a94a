//! `responder`: replay findings, validate playbooks, print the playbook schema.
//! A thin shell over the library: everything it prints comes from the same `decide` path the
//! Lambda uses.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use responder::event::EventError;
use responder::notice::NoticeFormat;
use responder::playbook::{self, Mode, PlaybookSet};
use responder::report::Report;
use responder::respond::Responder;

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

/// How to print.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// For people.
    Text,
    /// One JSON object per line, for tools.
    Json,
}

/// How to print the preflight report.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReportFormat {
    /// For a terminal.
    Text,
    /// To paste into a ticket.
    Markdown,
    /// For tools.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Respond to recorded events: decide, and (without --dry-run) carry out the plan against
    /// the AWS the environment points at (AWS_ENDPOINT_URL, credentials, RESPONDER_* names).
    Replay {
        /// Event files; `-` reads stdin. Each holds an EventBridge event, a GuardDuty finding
        /// (the event's `detail`), `aws guardduty get-findings` output (each finding
        /// replayed as its own event), or a JSON array or JSON Lines of those.
        #[arg(required = true)]
        events: Vec<PathBuf>,
        /// Playbook directory or file (default: the playbooks built into the binary).
        #[arg(long, env = "RESPONDER_PLAYBOOKS_PATH")]
        playbooks: Option<PathBuf>,
        /// Print the plan only; make no AWS call.
        #[arg(long)]
        dry_run: bool,
        /// text (for people) or json (one report per line, for tools; see the README's "JSON output").
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Undo a containment recorded in the ledger: restore security groups, delete exactly the
    /// network ACL entries that were added.
    Release {
        /// A GuardDuty finding id, or an ECS task ARN (every finding recorded for the task).
        target: String,
        /// text (a line per finding) or json (for tools).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Approve the containment a rule in `approve` mode deferred for a finding, and carry it
    /// out now (refused once the approval expired or was decided).
    Approve {
        /// The GuardDuty finding id.
        finding_id: String,
        /// Who approves (recorded in the ledger and the report).
        #[arg(long, env = "USER", default_value = "unknown")]
        by: String,
        /// Playbook directory or file (default: the playbooks built into the binary).
        #[arg(long, env = "RESPONDER_PLAYBOOKS_PATH")]
        playbooks: Option<PathBuf>,
        /// text (for people) or json (the report, for tools).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Reject the containment a rule in `approve` mode deferred: it will not happen.
    Reject {
        /// The GuardDuty finding id.
        finding_id: String,
        /// Who rejects (recorded in the ledger).
        #[arg(long, env = "USER", default_value = "unknown")]
        by: String,
    },
    /// Find quarantine entries left behind: release those whose task or instance is gone
    /// (its address may go to another workload), report entries in the range no record
    /// explains (never touched). Exit 1 when something could not be checked or released.
    Sweep {
        /// The reserved range of rule numbers, as the playbooks' `nacl_rule_range`.
        #[arg(long, default_value = "1-99", value_parser = parse_range)]
        range: (i32, i32),
        /// text (for people) or json (for tools).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// The main job, end to end against a local emulator: seed a Fargate service, respond to a
    /// crypto-mining finding on one of its tasks, show what was contained, stored and sent.
    Demo {
        /// Use an emulator already running at URL and leave everything in place afterwards.
        #[arg(long)]
        endpoint_url: Option<String>,
        /// text (for people) or json (for tools).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// What containment would achieve in this account, before any finding: per service, what a
    /// compromised task's quarantine would cut and leave open; ACL capacity; GuardDuty
    /// coverage; what defeats containment, with the fix. Read-only. Exit 0 when every service
    /// would be contained as the playbooks intend, 1 otherwise.
    Preflight {
        /// Only these clusters (name or ARN); default: every cluster in the region.
        #[arg(long = "cluster")]
        clusters: Vec<String>,
        /// Only these VPCs.
        #[arg(long = "vpc")]
        vpcs: Vec<String>,
        /// Playbook directory or file (default: the playbooks built into the binary).
        #[arg(long, env = "RESPONDER_PLAYBOOKS_PATH")]
        playbooks: Option<PathBuf>,
        /// Clusters where the stack may stop tasks (its ContainedClusterNames), a glob over
        /// cluster names; unset, every cluster is assumed and the report says so.
        #[arg(long, env = "RESPONDER_CONTAINED_CLUSTERS")]
        contained_clusters: Option<String>,
        /// text (a terminal), markdown (a ticket) or json (tools).
        #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
        output: ReportFormat,
    },
    /// Print the notice a finding would get, decided as a dry run (no AWS call): the SNS text,
    /// the Amazon Q Developer in chat applications (AWS Chatbot) card, or a Slack message.
    Render {
        /// Event files, as `replay` takes them.
        #[arg(required = true)]
        events: Vec<PathBuf>,
        /// text, chatbot or slack.
        #[arg(long, default_value = "text", value_parser = parse_format)]
        format: NoticeFormat,
        /// Playbook directory or file (default: the playbooks built into the binary).
        #[arg(long, env = "RESPONDER_PLAYBOOKS_PATH")]
        playbooks: Option<PathBuf>,
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RESPONDER_LOG").unwrap_or_else(|_| {
                // aws-config warns, in several lines each, about every source of region and
                // credentials it tried; a missing one is reported as one line instead.
                tracing_subscriber::EnvFilter::new("warn,aws_config=error")
            }),
        )
        // Colour only for people: not into a file or a pipe.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Replay {
            events,
            playbooks,
            dry_run,
            output,
        } => replay(&events, playbooks.as_deref(), dry_run, output),
        Command::Release { target, output } => with_runtime(release(&target, output)),
        Command::Sweep { range, output } => with_runtime(sweep(range, output)),
        Command::Approve {
            finding_id,
            by,
            playbooks,
            output,
        } => with_runtime(approve(&finding_id, &by, playbooks.as_deref(), output)),
        Command::Reject { finding_id, by } => with_runtime(reject(&finding_id, &by)),
        Command::Demo {
            endpoint_url,
            output,
        } => with_runtime(demo(endpoint_url.as_deref(), output)),
        Command::Preflight {
            clusters,
            vpcs,
            playbooks,
            contained_clusters,
            output,
        } => with_runtime(preflight(
            &clusters,
            &vpcs,
            playbooks.as_deref(),
            contained_clusters.as_deref(),
            output,
        )),
        Command::Render {
            events,
            format,
            playbooks,
        } => render(&events, format, playbooks.as_deref()),
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
        let count = plural(errors.0.len(), "problem", "problems");
        eprintln!("error: the playbooks are invalid ({count}):\n{errors}");
        ExitCode::FAILURE
    })
}

fn validate(path: Option<&Path>) -> ExitCode {
    match load_playbooks(path) {
        Ok(set) => {
            for warning in &set.warnings {
                eprintln!("warning: {warning}");
            }
            let warnings = match set.warnings.len() {
                0 => String::new(),
                1 => " (1 warning)".to_string(),
                n => format!(" ({n} warnings)"),
            };
            print_or_exit(&format!(
                "ok: {} in {}{warnings}\n",
                plural(set.rules.len(), "rule", "rules"),
                set.sources.join(", ")
            ))
        }
        Err(code) => code,
    }
}

/// "1 rule", "6 rules".
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn with_runtime(work: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(work),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A unique id for this CLI run, recorded as the ledger owner of what it does.
fn invocation_id() -> String {
    format!(
        "cli-{}-{}",
        std::process::id(),
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
    )
}

/// The responder the environment describes, with the playbooks given (or the defaults).
async fn responder_with(playbooks: Option<&Path>) -> Result<Responder, ExitCode> {
    responder_from_env(load_playbooks(playbooks)?).await
}

async fn responder_from_env(playbooks: PlaybookSet) -> Result<Responder, ExitCode> {
    Responder::from_env(playbooks).await.map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    })
}

fn parse_format(name: &str) -> Result<NoticeFormat, String> {
    NoticeFormat::parse(name).ok_or_else(|| {
        let names: Vec<&str> = NoticeFormat::ALL.iter().map(|(n, _)| *n).collect();
        format!("expected one of {}", names.join(", "))
    })
}

fn render(events: &[PathBuf], format: NoticeFormat, playbooks: Option<&Path>) -> ExitCode {
    let set = match load_playbooks(playbooks) {
        Ok(set) => set,
        Err(code) => return code,
    };
    let mut out = String::new();
    let mut failed = false;
    for (label, event) in read_inputs(events) {
        let report = match event {
            Ok(bytes) => responder::decide(Some(label), &bytes, &set, Mode::DryRun).0,
            Err(error) => Report::for_error(Some(label), &error),
        };
        failed |= report.error.is_some();
        let notice = responder::notice::render(&report, format, None);
        let notice = match format {
            NoticeFormat::Text => notice,
            // One readable document per event.
            _ => serde_json::from_str::<serde_json::Value>(&notice)
                .and_then(|v| serde_json::to_string_pretty(&v))
                .unwrap_or(notice),
        };
        out.push_str(&notice);
        out.push('\n');
    }
    match print_or_exit(&out) {
        code if failed => {
            let _ = code;
            ExitCode::from(2)
        }
        code => code,
    }
}

fn replay(events: &[PathBuf], playbooks: Option<&Path>, dry_run: bool, output: Output) -> ExitCode {
    let set = match load_playbooks(playbooks) {
        Ok(set) => set,
        Err(code) => return code,
    };
    let inputs = read_inputs(events);
    if dry_run {
        let reports = inputs
            .into_iter()
            .map(|(label, event)| match event {
                Ok(bytes) => responder::decide(Some(label), &bytes, &set, Mode::DryRun).0,
                Err(error) => Report::for_error(Some(label), &error),
            })
            .collect();
        return emit(reports, output);
    }
    with_runtime(async {
        let responder = match responder_from_env(set).await {
            Ok(responder) => responder,
            Err(code) => return code,
        };
        print_reports_async(inputs, output, &responder, &invocation_id()).await
    })
}

/// Every event of every file, labelled `file` (or `file#2` for the second event of a file
/// holding several), or the reason a file could not be read.
fn read_inputs(paths: &[PathBuf]) -> Vec<(String, Result<Vec<u8>, EventError>)> {
    let mut inputs = Vec::new();
    for path in paths {
        let label = path.display().to_string();
        let events = read_event(path).and_then(|bytes| responder::event::split_input(&bytes));
        match events {
            Err(error) => inputs.push((label, Err(error))),
            Ok(values) if values.is_empty() => inputs.push((label, Err(EventError::Empty))),
            Ok(values) => {
                let several = values.len() > 1;
                for (i, value) in values.into_iter().enumerate() {
                    let label = if several {
                        format!("{label}#{}", i + 1)
                    } else {
                        label.clone()
                    };
                    // Re-serialised so the CLI and the Lambda parse an event the same way.
                    let bytes = serde_json::to_vec(&value)
                        .map_err(|e| EventError::Unreadable(format!("cannot re-serialise: {e}")));
                    inputs.push((label, bytes));
                }
            }
        }
    }
    inputs
}

async fn print_reports_async(
    inputs: Vec<(String, Result<Vec<u8>, EventError>)>,
    output: Output,
    responder: &Responder,
    id: &str,
) -> ExitCode {
    let mut reports = Vec::new();
    for (i, (label, event)) in inputs.into_iter().enumerate() {
        let report = match event {
            Ok(bytes) => {
                responder
                    .respond(Some(label), &bytes, &format!("{id}-{i}"), None, None)
                    .await
                    .report
            }
            Err(error) => Report::for_error(Some(label), &error),
        };
        reports.push(report);
    }
    emit(reports, output)
}

/// Print reports; exit 2 when an event could not be handled, 1 when a step failed.
fn emit(reports: Vec<Report>, output: Output) -> ExitCode {
    let mut any_error = false;
    let mut any_failed = false;
    let mut stdout = anstream::stdout();
    for report in reports {
        any_error |= report.is_error();
        any_failed |= report
            .steps
            .iter()
            .any(|s| matches!(s.outcome, Some(responder::report::Outcome::Failed { .. })));
        let text = match output {
            Output::Json => format!("{}\n", report.to_json_line()),
            Output::Text => report.to_text(),
        };
        // Text shows the error in the report itself; JSON is for tools, so people get the
        // error once on stderr.
        if let (Output::Json, Some(error)) = (output, &report.error) {
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
    } else if any_failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn release(target: &str, output: Output) -> ExitCode {
    let responder = match responder_with(None).await {
        Ok(responder) => responder,
        Err(code) => return code,
    };
    match responder.release(target, &invocation_id()).await {
        // A typo must not look like a release.
        Ok(summary) if summary.nothing_recorded() => {
            eprintln!(
                "error: nothing to release: the ledger has no containment for {target:?} (a GuardDuty finding id, or an ECS task ARN)"
            );
            ExitCode::FAILURE
        }
        Ok(summary) => {
            let text = match output {
                Output::Json => serde_json::to_string(&summary)
                    .map(|t| t + "\n")
                    .unwrap_or_default(),
                Output::Text => summary.to_text(),
            };
            print_or_exit(&text)
        }
        Err(error) => {
            eprintln!("error: release of {target} failed: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn approve(finding_id: &str, by: &str, playbooks: Option<&Path>, output: Output) -> ExitCode {
    let responder = match responder_with(playbooks).await {
        Ok(responder) => responder,
        Err(code) => return code,
    };
    match responder.approve(finding_id, by, &invocation_id()).await {
        Ok(response) => emit(vec![response.report], output),
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn reject(finding_id: &str, by: &str) -> ExitCode {
    let responder = match responder_with(None).await {
        Ok(responder) => responder,
        Err(code) => return code,
    };
    match responder.reject(finding_id, by, &invocation_id()).await {
        Ok(approval) => print_or_exit(&format!(
            "finding {finding_id}: containment rejected by {by}; not done: {}\n",
            approval.steps.join("; ")
        )),
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn parse_range(text: &str) -> Result<(i32, i32), String> {
    let (first, last) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?}: expected FIRST-LAST, e.g. 1-99"))?;
    let number = |t: &str| {
        t.trim()
            .parse::<i32>()
            .map_err(|_| format!("{t:?} is not a rule number"))
    };
    let (first, last) = (number(first)?, number(last)?);
    if !(1..=32766).contains(&first) || !(first..=32766).contains(&last) {
        return Err(format!("{text:?}: need 1 <= FIRST <= LAST <= 32766"));
    }
    Ok((first, last))
}

async fn sweep(range: (i32, i32), output: Output) -> ExitCode {
    let responder = match responder_with(None).await {
        Ok(responder) => responder,
        Err(code) => return code,
    };
    match responder.sweep(range.0, range.1, &invocation_id()).await {
        Ok(report) => {
            let text = match output {
                Output::Json => serde_json::to_string(&report)
                    .map(|t| t + "\n")
                    .unwrap_or_default(),
                Output::Text => report.to_text(),
            };
            match print_or_exit(&text) {
                code if code != ExitCode::SUCCESS => code,
                _ if report.errors.is_empty() => ExitCode::SUCCESS,
                _ => ExitCode::FAILURE,
            }
        }
        Err(error) => {
            eprintln!("error: the sweep failed: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(endpoint: Option<&str>, output: Output) -> ExitCode {
    match emulator::demo::run(endpoint).await {
        Ok(result) => {
            let text = match output {
                Output::Json => serde_json::to_string(&result)
                    .map(|t| t + "\n")
                    .unwrap_or_default(),
                Output::Text => result.to_text(),
            };
            print_or_exit(&text)
        }
        Err(error) => {
            eprintln!("error: the demo failed: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn preflight(
    clusters: &[String],
    vpcs: &[String],
    playbooks: Option<&Path>,
    contained_clusters: Option<&str>,
    output: ReportFormat,
) -> ExitCode {
    let set = match load_playbooks(playbooks) {
        Ok(set) => set,
        Err(code) => return code,
    };
    let glob = match contained_clusters
        .map(responder::playbook::Glob::new)
        .transpose()
    {
        Ok(glob) => glob,
        Err(e) => {
            eprintln!("error: --contained-clusters {contained_clusters:?}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let responder = match responder_from_env(set).await {
        Ok(responder) => responder,
        Err(code) => return code,
    };
    let inventory = match responder::actions::inventory::take(
        &responder.clients,
        &responder.config,
        clusters,
        vpcs,
    )
    .await
    {
        Ok(inventory) => inventory,
        Err(error) => {
            eprintln!("error: cannot read the account: {error}");
            return ExitCode::from(2);
        }
    };
    let report = responder::preflight::assess(&inventory, &responder.playbooks, glob.as_ref());
    let text = match output {
        ReportFormat::Text => responder::preflight::render::text(&report),
        ReportFormat::Markdown => responder::preflight::render::markdown(&report),
        ReportFormat::Json => responder::preflight::render::json(&report),
    };
    match print_or_exit(&text) {
        code if code != ExitCode::SUCCESS => code,
        _ if report.all_contained_as_intended() => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

fn read_event(path: &Path) -> Result<Vec<u8>, EventError> {
    let limit = responder::event::MAX_INPUT_BYTES as u64 + 1;
    let mut bytes = Vec::new();
    let result = if path.as_os_str() == "-" {
        std::io::stdin().take(limit).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(limit).read_to_end(&mut bytes))
    };
    // The report is labelled with the path already.
    result.map_err(|e| EventError::Unreadable(e.to_string()))?;
    Ok(bytes)
}

/// Print to stdout; a closed pipe (`| head`) is not worth a panic.
fn print_or_exit(text: &str) -> ExitCode {
    match anstream::stdout().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
