//! A server's fixed settings, and their one validation: raftnode's flags,
//! the simulation and the tests all build a [`Config`] and ask it.

use std::time::Duration;

use super::NodeId;
use super::membership::Membership;

/// Fixed settings of one server.
#[derive(Clone, Debug)]
pub struct Config {
    pub id: NodeId,
    /// The cluster's first membership, in force until the log or a
    /// snapshot holds one: the servers of config.txt, all voters.
    /// [`Config::new`] gives each the address `node<ID>`, which suits
    /// cores that never connect (tests, the simulation); the runtime
    /// gives the real ones.
    pub bootstrap: Membership,
    /// Election timeouts are drawn uniformly from this range, anew each
    /// time the timer is reset (§5.2), so that split votes are rare.
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// How long a leader lets a peer go without an AppendEntries.
    pub heartbeat_interval: Duration,
    /// At most this many entries per AppendEntries.
    pub max_entries_per_append: usize,
    /// And at most about this many bytes of entry data, so that a batch of
    /// large entries stays within the transport's message limit. A single
    /// entry is always sent, whatever its size, so replication never stalls.
    pub max_bytes_per_append: usize,
    /// At most this many AppendEntries carrying entries in flight to one
    /// follower whose log position is known (pipelining; see
    /// [`progress`]). 1 is stop-and-wait. Together with the two limits
    /// above it bounds what a leader has outstanding per follower.
    pub max_inflight_appends: usize,
    /// After a snapshot, the log keeps up to this many of the entries it
    /// covers (and at most about `trailing_bytes` of them), so that a
    /// follower only a little behind catches up from the log instead of
    /// needing the whole snapshot (as hashicorp/raft's `TrailingLogs`).
    pub trailing_entries: u64,
    pub trailing_bytes: usize,
    /// Ask for a pre-vote before standing (thesis §9.6; see [`election`]).
    pub pre_vote: bool,
    /// A leader steps down once a majority has gone quiet for a minimum
    /// election timeout, and servers that heard from a leader within one
    /// refuse votes (thesis §6.2 and §9.6; see [`election`]).
    pub check_quorum: bool,
    /// Lease reads (thesis §6.4.1; see [`Raft::lease_read`]): a leader
    /// answers linearizable reads without a heartbeat round while a
    /// majority answered it recently enough. Every node of the cluster
    /// must have it on: it also makes a node refuse votes for a minimum
    /// election timeout after it starts. Needs `check_quorum`.
    pub lease_reads: bool,
    /// The most any node's clock may run fast or slow, as a fraction
    /// (0.1: between 0.9 and 1.1 seconds per second). Lease reads are
    /// linearizable only within this bound.
    pub max_clock_drift: f64,
    /// Seeds the election-timeout generator, so a simulation replays.
    pub seed: u64,
}

impl Config {
    /// Server `id` of a cluster of `members` (`id` among them), with the
    /// runtime's default settings: election timeouts of 300..600 ms,
    /// heartbeats every 50 ms, and AppendEntries of at most 256 entries or
    /// about 1 MiB, which leaves room under the 8 MiB line limit for JSON
    /// escaping, with up to 4 of them in flight per follower; after a
    /// snapshot, up to 1,000 entries (4 MiB) of trailing log; PreVote and
    /// CheckQuorum on.
    pub fn new(id: NodeId, members: impl IntoIterator<Item = NodeId>, seed: u64) -> Config {
        Config {
            id,
            bootstrap: Membership::bootstrap(members.into_iter().map(|m| (m, format!("node{m}")))),
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(600),
            heartbeat_interval: Duration::from_millis(50),
            max_entries_per_append: 256,
            max_bytes_per_append: 1024 * 1024,
            max_inflight_appends: 4,
            trailing_entries: 1000,
            trailing_bytes: 4 * 1024 * 1024,
            pre_vote: true,
            check_quorum: true,
            lease_reads: false,
            max_clock_drift: 0.1,
            seed,
        }
    }

    /// Whether these settings can run a server; the one check, for the
    /// command line and for [`Raft::restore`] alike.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let ms = |d: Duration| d.as_millis();
        let (min, max) = (self.election_timeout_min, self.election_timeout_max);
        // (This server need not be in the bootstrap membership: a server
        // joining a running cluster is not, and stands for nothing until
        // a membership in the log makes it a voter. Its bootstrap
        // membership is empty: it knows none until the leader's log or
        // snapshot brings one.)
        let joining = self.bootstrap.servers.is_empty() && self.bootstrap.removed.is_empty();
        if let Some(e) = self.bootstrap.check().err().filter(|_| !joining) {
            Err(InvalidConfig::Peers(e.to_string()))
        } else if min.is_zero() || min > max {
            Err(InvalidConfig::ElectionTimeout(format!(
                "needs 0 < MIN <= MAX, not {}..{} ms",
                ms(min),
                ms(max)
            )))
        } else if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= min {
            Err(InvalidConfig::Heartbeat(format!(
                "{} ms must be above 0 and below the shortest election timeout ({} ms)",
                ms(self.heartbeat_interval),
                ms(min)
            )))
        } else if self.max_entries_per_append == 0 || self.max_inflight_appends == 0 {
            Err(InvalidConfig::Batches(
                "entries per AppendEntries and AppendEntries in flight must be above 0".into(),
            ))
        } else if !(0.0..0.5).contains(&self.max_clock_drift) {
            // Beyond a half, a lease would be at most a third of the
            // election timeout: not worth the clock risk.
            Err(InvalidConfig::ClockDrift(format!(
                "must be at least 0 and below 0.5, not {}",
                self.max_clock_drift
            )))
        } else if self.lease_reads && !self.check_quorum {
            Err(InvalidConfig::LeaseReads(
                "lease reads need CheckQuorum".into(),
            ))
        } else {
            Ok(())
        }
    }

    /// Retries to an unreachable peer back off up to this; kept below the
    /// shortest election timeout so that a peer that comes back hears from
    /// the leader before it would start an election of its own.
    pub(super) fn max_backoff(&self) -> Duration {
        (self.election_timeout_min / 2).max(self.heartbeat_interval)
    }
}

/// Settings that cannot run a server (see [`Config::validate`]); each
/// names the setting, with why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidConfig {
    #[error("peers: {0}")]
    Peers(String),
    #[error("election timeout: {0}")]
    ElectionTimeout(String),
    #[error("heartbeat interval: {0}")]
    Heartbeat(String),
    #[error("append limits: {0}")]
    Batches(String),
    #[error("clock drift bound: {0}")]
    ClockDrift(String),
    #[error("lease reads: {0}")]
    LeaseReads(String),
}
