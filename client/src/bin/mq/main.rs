//! `mq`: the FerroMQ command-line tool. Commands, flags and JSON fields are a contract.

mod admin_cmds;
mod bench;
mod consume;
mod dlq;
mod lease;
mod produce;
mod security_cmds;
mod tx;

use std::process::ExitCode;
use std::time::Duration;

use clap::error::{ContextKind, ErrorKind};
use clap::{Args, Parser, Subcommand};
use client::StartFrom;
use protocol::group_policy::{RetryDelays, RetryPolicy};
use protocol::messages::{ResetTarget, PERM_READ, PERM_WRITE};

/// FerroMQ command-line tool: manage topics and groups, produce, consume, benchmark.
#[derive(Debug, Parser)]
#[command(name = "mq", version)]
struct Cli {
    /// Broker address (host:port).
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:10911",
        env = "MQ_BROKER"
    )]
    broker: String,
    #[command(flatten)]
    security: security_cmds::SecurityArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create, list and inspect topics.
    #[command(subcommand)]
    Topic(TopicCmd),
    /// Send one message per line of stdin; prints one JSON line per acknowledged message.
    Produce(produce::ProduceArgs),
    /// Consume as a member of a group; prints one JSON line per message (or runs --exec).
    Consume(consume::ConsumeArgs),
    /// Inspect and reset consumer groups.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Inspect and replay a group's dead-letter queue.
    #[command(subcommand)]
    Dlq(DlqCmd),
    /// Look up single messages.
    #[command(subcommand)]
    Message(MessageCmd),
    /// Recall a timer message not yet due, by the recall_handle its send printed.
    Recall {
        /// Topic the timer message was sent to.
        topic: String,
        /// The recall_handle of its ack line.
        handle: String,
    },
    /// Broker statistics as JSON.
    Stats,
    /// Measure throughput and latency: produce, consume, sync-latency, e2e, pop, timer, keys.
    Bench(bench::BenchArgs),
    /// Transactions: begin, send, ack, commit, rollback; list the open ones.
    #[command(subcommand)]
    Tx(tx::TxCmd),
    /// Lease messages with per-message acknowledgement and print them with their receipt
    /// handles (nothing is acked: settle them with ack, change-invisibility or reject).
    Receive(lease::ReceiveArgs),
    /// Ack received messages by receipt handle: done for good.
    Ack {
        /// The consumer group that received them.
        #[arg(long)]
        group: String,
        /// Receipt handles printed by `mq receive`.
        #[arg(required = true)]
        handles: Vec<client::ReceiptHandle>,
    },
    /// Move a received message's lease deadline (0: visible again now, a nack); prints
    /// the new handle.
    ChangeInvisibility {
        /// The consumer group that received it.
        #[arg(long)]
        group: String,
        /// Its receipt handle.
        handle: client::ReceiptHandle,
        /// New invisibility from now, in ms (up to 12 h).
        #[arg(long)]
        invisible_ms: u64,
    },
    /// Send a received message to the group's dead-letter queue now: no more attempts.
    Reject {
        /// The consumer group that received it.
        #[arg(long)]
        group: String,
        /// Its receipt handle.
        handle: client::ReceiptHandle,
    },
    /// Users of a broker with --auth on: add (prints the secret once), list, remove.
    #[command(subcommand)]
    User(security_cmds::UserCmd),
    /// Access rules of users: set, list, remove (pub, sub, admin on topics and groups).
    #[command(subcommand)]
    Acl(security_cmds::AclCmd),
    /// Replication: show brokers' roles and offsets, promote a replica.
    #[command(subcommand)]
    Cluster(ClusterCmd),
}

#[derive(Debug, Subcommand)]
enum ClusterCmd {
    /// One JSON line per broker: role, epoch, master, offsets, sync set, replicas and lag.
    Status {
        /// Brokers to ask [default: --broker].
        addrs: Vec<String>,
    },
    /// Turn a caught-up replica into its group's master with a new epoch.
    Promote {
        /// The replica's client address.
        addr: String,
        /// Promote even if its master is reachable and ahead of it (may lose acks).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TopicCmd {
    /// Create a topic; an existing one with the same settings is left as it is.
    Create {
        /// Topic name: letters, digits, '-', '_' and '.'.
        name: String,
        /// Number of queues [default: the broker's --default-queues].
        #[arg(long)]
        queues: Option<u32>,
    },
    /// List topics.
    List {
        /// Also list %RETRY% and %DLQ% topics.
        #[arg(long)]
        all: bool,
    },
    /// Show a topic's queues with their min and max offsets.
    Show {
        /// Topic name.
        name: String,
    },
    /// Change a topic's queue count (it can only grow) or permissions.
    Update {
        /// Topic name.
        name: String,
        /// New number of queues, at least the current one.
        #[arg(long)]
        queues: Option<u32>,
        /// Permissions: rw, r (no sends), w (no pulls) or - (neither).
        #[arg(long, value_parser = parse_perm)]
        perm: Option<u8>,
    },
    /// Delete a topic and its queues (its messages leave the commit log with retention).
    Delete {
        /// Topic name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum GroupCmd {
    /// Per topic and queue: committed offset, max offset, lag and messages skipped
    /// (removed by retention before the group read them); members and their queues; the
    /// retry policy in force.
    Show {
        /// Consumer group.
        group: String,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Move a group's offsets on every queue of a topic.
    Reset(ResetArgs),
    /// Delete a group: its committed offsets and its %RETRY% and %DLQ% topics.
    Delete {
        group: String,
        /// Delete even while the group has live members (they rejoin from scratch).
        #[arg(long)]
        force: bool,
    },
    /// Set the group's own retry policy (kept by the broker across restarts), or return it
    /// to the broker's defaults with --reset-retry.
    Set(GroupSetArgs),
}

#[derive(Debug, Args)]
struct GroupSetArgs {
    /// Consumer group.
    group: String,
    /// Retries a failed message gets; the failure after the last goes to %DLQ%GROUP.
    #[arg(
        long,
        value_name = "N",
        required_unless_present = "reset_retry",
        conflicts_with = "reset_retry"
    )]
    max_reconsume: Option<u32>,
    /// Delay before retry 1, 2, ... in ms (retries past the end wait the last one)
    /// [default: the broker's --retry-delays-ms].
    #[arg(long, value_name = "MS,MS,...", value_parser = parse_delay_table,
          conflicts_with_all = ["retry_backoff", "reset_retry"])]
    retry_delays_ms: Option<RetryDelays>,
    /// Exponential backoff: retry n waits INITIAL_MS × MULTIPLIER^(n-1), at most MAX_MS.
    #[arg(long, value_name = "INITIAL_MS,MULTIPLIER,MAX_MS", value_parser = parse_backoff,
          conflicts_with = "reset_retry")]
    retry_backoff: Option<RetryDelays>,
    /// Remove the group's own policy: the broker's defaults apply again.
    #[arg(long)]
    reset_retry: bool,
}

#[derive(Debug, Args)]
struct ResetArgs {
    /// Consumer group.
    group: String,
    /// Topic whose queues to move the group's offsets on.
    #[arg(long)]
    topic: String,
    /// earliest, latest, or a wall-clock timestamp in ms.
    #[arg(long, value_parser = parse_reset_target)]
    to: ResetTarget,
    /// Reset even while the group has live members.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Subcommand)]
enum DlqCmd {
    /// List the dead-lettered messages of a group (topic %DLQ%GROUP) as JSON lines.
    Show {
        /// Consumer group whose dead-letter queue to show.
        group: String,
        /// Show at most this many.
        #[arg(long)]
        max: Option<u64>,
    },
    /// Send dead-lettered messages back to their original topic, then commit past them.
    Resend {
        /// Consumer group whose dead-letter queue to replay.
        group: String,
        /// Resend at most this many.
        #[arg(long)]
        max: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum MessageCmd {
    /// Look a message up by the msg_id that produce and consume print; one JSON line with
    /// all its properties.
    Show {
        /// Message id (24 hex digits).
        msg_id: String,
    },
    /// Find a topic's messages by key (the broker's key index): the newest --max of them,
    /// oldest first, one JSON line each as `mq consume` prints them.
    Query {
        /// Topic to search.
        topic: String,
        /// The key (one of the space-separated keys a message was sent with).
        #[arg(long)]
        key: String,
        /// Only messages stored at or after this time (ms since the epoch).
        #[arg(long, value_name = "MS", default_value_t = 0)]
        from: u64,
        /// Only messages stored at or before this time (ms since the epoch).
        #[arg(long, value_name = "MS", default_value_t = u64::MAX, hide_default_value = true)]
        to: u64,
        /// At most this many messages (1 to 10000).
        #[arg(long, default_value_t = 32,
              value_parser = clap::value_parser!(u32).range(1..=i64::from(protocol::messages::MAX_QUERY_MESSAGES)))]
        max: u32,
    },
}

/// `rw`, `r`, `w` or `-` as permission bits.
fn parse_perm(s: &str) -> Result<u8, String> {
    match s {
        "rw" | "wr" => Ok(PERM_READ | PERM_WRITE),
        "r" => Ok(PERM_READ),
        "w" => Ok(PERM_WRITE),
        "-" | "none" => Ok(0),
        other => Err(format!("expected rw, r, w or -, got {other:?}")),
    }
}

pub(crate) fn parse_start(s: &str) -> Result<StartFrom, String> {
    match s {
        "earliest" => Ok(StartFrom::Earliest),
        "latest" => Ok(StartFrom::Latest),
        ts => ts
            .parse()
            .map(StartFrom::TimestampMs)
            .map_err(|_| format!("expected earliest, latest or a timestamp in ms, got {ts:?}")),
    }
}

/// `1000,5000,30000`; an empty list is passed on (the policy check names it).
fn parse_delay_table(s: &str) -> Result<RetryDelays, String> {
    let table = s
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.parse()
                .map_err(|_| format!("{d:?} is not a delay in whole milliseconds"))
        })
        .collect::<Result<Vec<u64>, String>>()?;
    Ok(RetryDelays::Table(table))
}

/// `INITIAL_MS,MULTIPLIER,MAX_MS`, e.g. `1000,2,60000`.
fn parse_backoff(s: &str) -> Result<RetryDelays, String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let [initial, multiplier, max] = parts[..] else {
        return Err(format!(
            "expected INITIAL_MS,MULTIPLIER,MAX_MS (three values), got {} value(s)",
            parts.len()
        ));
    };
    let ms = |v: &str, what: &str| {
        v.parse::<u64>()
            .map_err(|_| format!("{what} {v:?} is not a whole number of milliseconds"))
    };
    Ok(RetryDelays::Backoff {
        initial_ms: ms(initial, "INITIAL_MS")?,
        multiplier: multiplier
            .parse()
            .map_err(|_| format!("MULTIPLIER {multiplier:?} is not a number"))?,
        max_ms: ms(max, "MAX_MS")?,
    })
}

fn parse_reset_target(s: &str) -> Result<ResetTarget, String> {
    Ok(match parse_start(s)? {
        StartFrom::Earliest => ResetTarget::Earliest,
        StartFrom::Latest => ResetTarget::Latest,
        StartFrom::TimestampMs(ts) => ResetTarget::TimestampMs(ts),
    })
}

/// An error already worded for the user.
pub(crate) type CliResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A usage error as one line (clap spreads it over several, with the usage), exit code 2;
/// `--help` and `--version` print as usual.
fn parse_args() -> Result<Cli, ExitCode> {
    match Cli::try_parse() {
        Ok(cli) => Ok(cli),
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            Err(ExitCode::SUCCESS)
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // `mq` or `mq topic` alone: the help is the answer (on stderr, failing).
            let _ = e.print();
            Err(ExitCode::from(2))
        }
        Err(e) => {
            eprintln!("mq: error: {} (see --help)", one_line(&e));
            Err(ExitCode::from(2))
        }
    }
}

/// A usage error on one line, built from the error's structured context (what kind, which
/// argument, which value, the parser's reason, clap's suggestion) rather than from its
/// multi-line rendering.
fn one_line(e: &clap::Error) -> String {
    let get = |kind| e.get(kind).map(ToString::to_string).unwrap_or_default();
    let arg = get(ContextKind::InvalidArg);
    let mut msg = match e.kind() {
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => {
            let mut m = format!(
                "invalid value '{}' for '{arg}'",
                get(ContextKind::InvalidValue)
            );
            if let Some(reason) = std::error::Error::source(e) {
                m.push_str(&format!(": {reason}"));
            }
            if e.get(ContextKind::ValidValue).is_some() {
                m.push_str(&format!(
                    " (possible values: {})",
                    get(ContextKind::ValidValue)
                ));
            }
            m
        }
        ErrorKind::UnknownArgument => format!("unexpected argument '{arg}'"),
        ErrorKind::InvalidSubcommand => {
            format!(
                "unrecognized subcommand '{}'",
                get(ContextKind::InvalidSubcommand)
            )
        }
        ErrorKind::MissingRequiredArgument => {
            format!("required arguments were not provided: {arg}")
        }
        ErrorKind::ArgumentConflict => match get(ContextKind::PriorArg) {
            prior if prior == arg || prior.is_empty() => {
                format!("'{arg}' cannot be used more than once")
            }
            prior => format!("'{arg}' cannot be used with '{prior}'"),
        },
        kind if arg.is_empty() => kind.to_string(),
        kind => format!("{kind}: '{arg}'"),
    };
    for hint in [ContextKind::SuggestedSubcommand, ContextKind::SuggestedArg] {
        if e.get(hint).is_some() {
            msg.push_str(&format!("; did you mean '{}'?", get(hint)));
        }
    }
    msg
}

fn main() -> ExitCode {
    let cli = match parse_args() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MQ_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, never in a captured log.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mq: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_until_interrupted(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mq: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How long `mq consume` may take to stop after SIGINT or SIGTERM (it commits what was
/// acked) before `mq` exits anyway: a broker that is down must not hold it.
const STOP_GRACE: Duration = Duration::from_millis(750);

/// Runs the command until it ends or SIGINT/SIGTERM arrives. Every command stops at once
/// on a signal, whatever it is waiting for (a reconnect to a broker that is down, say),
/// except `consume`, which handles the signal itself and gets [`STOP_GRACE`] to commit.
async fn run_until_interrupted(cli: Cli) -> CliResult {
    // Registered before the command starts, so no signal is ever left to its default
    // action (dying without a word).
    let mut signals = Signals::new()?;
    let consuming = matches!(cli.cmd, Cmd::Consume(_));
    let broker = cli.broker.clone();
    let work = run(cli);
    tokio::pin!(work);
    let name = tokio::select! {
        result = &mut work => return result,
        name = signals.recv() => name,
    };
    if consuming {
        if let Ok(result) = tokio::time::timeout(STOP_GRACE, &mut work).await {
            return result;
        }
        return Err(format!(
            "interrupted by {name}: the broker at {broker} did not answer in time, so \
             messages acked since the last commit were not committed and will be delivered again"
        )
        .into());
    }
    Err(format!("interrupted by {name}").into())
}

/// SIGINT and SIGTERM, watched from the start so that one arriving while a command is busy
/// is not lost (`mq consume` ends its loop and commits what was acked before exiting).
pub(crate) struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn new() -> CliResult<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                int: signal(SignalKind::interrupt())?,
                term: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The name of the first signal that arrives.
    pub(crate) async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

async fn run(cli: Cli) -> CliResult {
    cli.security.apply()?;
    let broker = cli.broker.as_str();
    match cli.cmd {
        Cmd::Topic(TopicCmd::Create { name, queues }) => {
            admin_cmds::topic_create(broker, &name, queues).await
        }
        Cmd::Topic(TopicCmd::List { all }) => admin_cmds::topic_list(broker, all).await,
        Cmd::Topic(TopicCmd::Show { name }) => admin_cmds::topic_show(broker, &name).await,
        Cmd::Topic(TopicCmd::Update { name, queues, perm }) => {
            admin_cmds::topic_update(broker, &name, queues, perm).await
        }
        Cmd::Topic(TopicCmd::Delete { name }) => admin_cmds::topic_delete(broker, &name).await,
        Cmd::Message(MessageCmd::Show { msg_id }) => {
            admin_cmds::message_show(broker, &msg_id).await
        }
        Cmd::Message(MessageCmd::Query {
            topic,
            key,
            from,
            to,
            max,
        }) => admin_cmds::message_query(broker, &topic, &key, from, to, max).await,
        Cmd::Produce(args) => produce::run(broker, args).await,
        Cmd::Consume(args) => consume::run(broker, args).await,
        Cmd::Group(GroupCmd::Show { group, json }) => {
            admin_cmds::group_show(broker, &group, json).await
        }
        Cmd::Group(GroupCmd::Reset(a)) => {
            admin_cmds::group_reset(broker, &a.group, &a.topic, a.to, a.force).await
        }
        Cmd::Group(GroupCmd::Delete { group, force }) => {
            admin_cmds::group_delete(broker, &group, force).await
        }
        Cmd::Group(GroupCmd::Set(a)) => {
            let delays = a.retry_delays_ms.or(a.retry_backoff);
            let policy = a.max_reconsume.map(|max_reconsume_times| RetryPolicy {
                max_reconsume_times,
                delays,
            });
            admin_cmds::group_set(broker, &a.group, policy).await
        }
        Cmd::Dlq(DlqCmd::Show { group, max }) => dlq::show(broker, &group, max).await,
        Cmd::Dlq(DlqCmd::Resend { group, max }) => dlq::resend(broker, &group, max).await,
        Cmd::Recall { topic, handle } => produce::recall(broker, &topic, &handle).await,
        Cmd::Stats => admin_cmds::stats(broker).await,
        Cmd::Bench(args) => bench::run(broker, args).await,
        Cmd::Tx(cmd) => tx::run(broker, cmd).await,
        Cmd::Receive(args) => lease::receive(broker, args).await,
        Cmd::Ack { group, handles } => lease::ack(broker, &group, handles).await,
        Cmd::ChangeInvisibility {
            group,
            handle,
            invisible_ms,
        } => lease::change(broker, &group, handle, invisible_ms).await,
        Cmd::Reject { group, handle } => lease::reject(broker, &group, handle).await,
        Cmd::User(cmd) => security_cmds::user(broker, cmd).await,
        Cmd::Acl(cmd) => security_cmds::acl(broker, cmd).await,
        Cmd::Cluster(ClusterCmd::Status { addrs }) => {
            let addrs = if addrs.is_empty() {
                vec![broker.to_owned()]
            } else {
                addrs
            };
            admin_cmds::cluster_status(&addrs).await
        }
        Cmd::Cluster(ClusterCmd::Promote { addr, force }) => {
            admin_cmds::cluster_promote(&addr, force).await
        }
    }
}
