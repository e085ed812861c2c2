//! The store in a Redis Cluster of three masters with one replica each: one cluster with the
//! module on every node, one without it (the script answers). On each, in order: 10,000 checks
//! over keys in 10,000 distinct slots, every one answered by Redis and stored only on the
//! master that owns its slot; a slot holding full limiters moved to another master under
//! traffic, with no error for the caller and the limiters still full; a manual failover, after
//! which the limiters are still where they were; and `clear_all` on every master. The second
//! cluster requires a password, given in the first seed node's URL only.

mod common;

use common::cluster::*;
use ratelimit_client::{Algorithm, Backend, Config, Limit, Outcome, RedisStore};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How many checks the slot-spread step sends: one per key, each key in its own slot.
const CHECKS: usize = 10_000;
/// The store's prefix.
const PREFIX: &str = "ratelimit:";
const ALGORITHMS: [Algorithm; 3] = [Algorithm::Fixed, Algorithm::Sliding, Algorithm::Gcra];

fn limit(n: u64, algorithm: Algorithm) -> Limit {
    Limit::new(algorithm, n, Duration::from_secs(3600)).unwrap()
}

/// The seeds of a store: two of the six nodes (it finds the others), the password, if any, in
/// the first one's URL only.
fn seeds(cluster: &Cluster) -> Vec<String> {
    let second = format!("redis://127.0.0.1:{}/", cluster.ports()[1]);
    vec![cluster.urls()[0].clone(), second]
}

async fn connect(cluster: &Cluster, prefix: &str) -> RedisStore {
    common::connected(Config::cluster(seeds(cluster)).prefix(prefix)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_module_answers_in_a_cluster_through_resharding_and_failover() {
    run(true, None, Backend::Module).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_script_answers_in_a_cluster_through_resharding_and_failover() {
    run(false, Some("s3cret"), Backend::Script).await;
}

async fn run(module: bool, password: Option<&str>, backend: Backend) {
    let started = Instant::now();
    let cluster = Cluster::start(module, password).await;
    let created = started.elapsed();
    let store = connect(&cluster, PREFIX).await;
    assert_eq!(store.backend(), Some(backend));
    let masked = store.config().masked_target().unwrap();
    let ports = cluster.ports();
    let userinfo = if password.is_some() { ":****@" } else { "" };
    assert_eq!(
        masked,
        format!(
            "cluster redis://{userinfo}127.0.0.1:{}/,redis://127.0.0.1:{}/",
            ports[0], ports[1]
        )
    );
    if let Some(password) = password {
        assert!(!format!("{store:?} {:?}", store.config()).contains(password));
    }
    same_answers_as_one_server(&store, backend).await;
    if !module {
        scripts_reload_on_each_node(&cluster, &store).await;
    }
    spread_over_the_slots(&cluster, &store, backend).await;
    move_a_full_slot_under_traffic(&cluster, &store, backend).await;
    fail_over_under_traffic(&cluster, &store, backend).await;
    clear_all_on_every_master(&cluster, &store).await;
    println!(
        "{backend}: cluster created in {created:?}, all steps done in {:?}",
        started.elapsed()
    );
}

/// A cluster that cannot be reached: the store is made all the same, and answers from the
/// failure policy.
#[tokio::test]
async fn an_unreachable_cluster_gets_the_failure_policy() {
    let config = Config::cluster([format!("redis://127.0.0.1:{}/", common::closed_port())]);
    let store = RedisStore::new(config).unwrap();
    let d = store
        .check("k", &limit(2, Algorithm::Fixed), 1)
        .await
        .unwrap();
    assert_eq!((d.backend, d.is_admitted()), (Backend::Local, true));
    assert!(store.ping().await.unwrap_err().is_unreachable());
    assert!(store.clear_all().await.unwrap_err().is_outage());
    let both = Config::new("redis://127.0.0.1/").cluster_nodes(["redis://127.0.0.1:7000"]);
    assert!(RedisStore::new(both).unwrap_err().is_invalid_config());
}

/// The decisions of a few sequences, as the module gives them on one server.
async fn same_answers_as_one_server(store: &RedisStore, backend: Backend) {
    for algorithm in ALGORITHMS {
        let key = format!("same:{algorithm}");
        let mut seen = Vec::new();
        for cost in [1, 1, 1, 0, 5] {
            let d = store.check(&key, &limit(2, algorithm), cost).await;
            let d = d.unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_eq!(d.backend, backend);
            seen.push((
                d.is_admitted(),
                d.remaining,
                d.outcome.retry_after_ms().signum(),
            ));
        }
        assert_eq!(
            seen,
            [
                (true, 1, 0),
                (true, 0, 0),
                (false, 0, 1),
                (true, 0, 0),
                (false, 0, -1)
            ],
            "{algorithm}"
        );
        let quota = store.quota(&key, &limit(2, algorithm)).await.unwrap();
        assert_eq!(quota.remaining, 0);
        assert!(matches!(quota.next, Outcome::RetryAfter(_)), "{quota:?}");
        assert!(store.reset(&key).await.unwrap());
        assert!(!store.reset(&key).await.unwrap());
    }
    let gcra = limit(10, Algorithm::Gcra).with_burst(3).unwrap();
    let d = store.check("same:burst", &gcra, 1).await.unwrap();
    assert_eq!((d.limit, d.remaining), (3, 2));
    assert_eq!(
        store
            .increment("same:n", Duration::from_secs(60), 2)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .increment("same:n", Duration::from_secs(60), 3)
            .await
            .unwrap(),
        5
    );
    let (value, ttl) = store.get_with_expiry("same:n").await.unwrap();
    assert_eq!(value, 5);
    assert!(ttl.is_some_and(|ttl| ttl <= Duration::from_secs(60)));
}

/// `SCRIPT FLUSH` on every node: the next check on each master meets `NOSCRIPT` there, and the
/// script is sent whole (`EVAL`), which caches it on that master.
async fn scripts_reload_on_each_node(cluster: &Cluster, store: &RedisStore) {
    let shards = cluster.shards().await;
    let tags = slot_tags("noscript:");
    for shard in &shards {
        for port in std::iter::once(shard.master).chain(shard.replicas.iter().copied()) {
            let _: () = call(&mut cluster.con(port).await, &["SCRIPT", "FLUSH"]).await;
        }
    }
    for shard in &shards {
        let key = format!("{{{}}}:k", tags[usize::from(shard.ranges[0].0)]);
        let d = store.check(&key, &limit(5, Algorithm::Fixed), 1).await;
        let d = d.unwrap_or_else(|e| panic!("{key} after SCRIPT FLUSH: {e}"));
        assert_eq!((d.backend, d.remaining), (Backend::Script, 4));
    }
    // A replica gets the script when it is promoted and meets NOSCRIPT: see the failover step.
    for shard in &shards {
        assert!(
            script_loaded(cluster, shard.master).await,
            "the script is loaded again on {}",
            shard.master
        );
    }
}

async fn script_loaded(cluster: &Cluster, port: u16) -> bool {
    let sha = redis::Script::new(ratelimit_client::LUA_SCRIPT)
        .get_hash()
        .to_string();
    let exists: Vec<bool> = call(&mut cluster.con(port).await, &["SCRIPT", "EXISTS", &sha]).await;
    exists == [true]
}

/// 10,000 checks, each on a key of its own slot, spread evenly over the 16,384 slots: every
/// one is answered by `backend`, and each key is stored on the master that owns its slot and
/// nowhere else.
async fn spread_over_the_slots(cluster: &Cluster, store: &RedisStore, backend: Backend) {
    let tags = slot_tags("user:");
    let keys: Vec<(String, Algorithm)> = (0..CHECKS)
        .map(|i| {
            let slot = i * usize::from(SLOTS) / CHECKS;
            (format!("{{{}}}:search", tags[slot]), ALGORITHMS[i % 3])
        })
        .collect();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in keys.chunks(CHECKS / 50) {
        let (store, chunk) = (store.clone(), chunk.to_vec());
        tasks.spawn(async move {
            let mut answered = 0;
            for (key, algorithm) in chunk {
                let d = store.check(&key, &limit(2, algorithm), 1).await;
                let d = d.unwrap_or_else(|e| panic!("{key}: {e}"));
                assert_eq!(
                    (d.backend, d.is_admitted(), d.remaining),
                    (backend, true, 1),
                    "{key}"
                );
                answered += 1;
            }
            answered
        });
    }
    let mut answered = 0;
    while let Some(count) = tasks.join_next().await {
        answered += count.expect("no check panicked");
    }
    let elapsed = started.elapsed();
    assert_eq!(answered, CHECKS);

    let started = Instant::now();
    let algorithms: BTreeMap<String, Algorithm> = keys
        .iter()
        .map(|(key, algorithm)| (format!("{PREFIX}{key}"), *algorithm))
        .collect();
    let shards = cluster.shards().await;
    let mut masters = Vec::new();
    for shard in &shards {
        masters.push(cluster.con(shard.master).await);
    }
    let mut found = 0;
    let mut per_master = Vec::new();
    for (index, shard) in shards.iter().enumerate() {
        let here = scan_keys(&mut masters[index], "ratelimit:{user:*").await;
        for key in &here {
            let slot: u16 = call(&mut masters[index], &["CLUSTER", "KEYSLOT", key]).await;
            assert_eq!(slot, key_slot(key.as_bytes()));
            assert!(
                shard.owns(slot),
                "{key} (slot {slot}) is stored on {}, which does not own it",
                shard.master
            );
            let value = get_on(&mut masters[index], key).await.unwrap().unwrap();
            let well_formed = match algorithms[key] {
                Algorithm::Fixed => value == "1",
                Algorithm::Sliding => value.starts_with("s:"),
                _ => value.starts_with('-'),
            };
            assert!(well_formed, "{key} holds {value:?}");
            for (other, con) in masters.iter_mut().enumerate() {
                if other != index {
                    assert_eq!(get_on(con, key).await, Err("MOVED".to_string()), "{key}");
                }
            }
        }
        found += here.len();
        per_master.push((shard.master, here.len()));
    }
    assert_eq!(found, CHECKS, "every key is stored once");
    for (port, count) in &per_master {
        assert!(*count > CHECKS / 4, "{port} holds only {count} keys");
    }
    println!(
        "{backend}: {answered} checks over {CHECKS} slots answered in {elapsed:?}; keys per \
         master (port, keys) {per_master:?}, verified in {:?}",
        started.elapsed()
    );
}

/// What a traffic loop saw.
#[derive(Default)]
struct Traffic {
    ops: AtomicUsize,
    stop: AtomicBool,
    problems: Mutex<Vec<String>>,
}

impl Traffic {
    /// Checks `full` (each must be denied by `backend`, remaining 0) and `open` (each must be
    /// admitted by `backend`) in a loop until stopped. Any error or other decision is recorded.
    fn start(
        self: &Arc<Self>,
        store: &RedisStore,
        backend: Backend,
        full: Vec<(String, Limit)>,
        open: Vec<String>,
    ) -> Loop {
        let (traffic, store) = (self.clone(), store.clone());
        let many = Limit::fixed(1_000_000_000, Duration::from_secs(3600)).unwrap();
        Loop(tokio::spawn(async move {
            while !traffic.stop.load(Ordering::Relaxed) {
                let requests = full
                    .iter()
                    .map(|(key, limit)| (key, limit, true))
                    .chain(open.iter().map(|key| (key, &many, false)));
                for (key, limit, must_be_full) in requests {
                    let problem = match store.check(key, limit, 1).await {
                        Err(error) => Some(format!("{key}: error {error}")),
                        Ok(d) if d.backend != backend => Some(format!("{key}: {d:?}")),
                        Ok(d) if must_be_full && (d.is_admitted() || d.remaining != 0) => {
                            Some(format!("{key} is no longer full: {d:?}"))
                        }
                        Ok(d) if !must_be_full && !d.is_admitted() => {
                            Some(format!("{key} was denied: {d:?}"))
                        }
                        Ok(_) => None,
                    };
                    if let Some(problem) = problem {
                        traffic.problems.lock().unwrap().push(problem);
                    }
                    traffic.ops.fetch_add(1, Ordering::Relaxed);
                }
            }
        }))
    }

    /// Waits until the loop has made `count` more calls, so that a step happens with traffic
    /// in flight; answers the calls made so far.
    async fn wait_for(&self, count: usize, step: &str) -> usize {
        let start = self.ops.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.ops.load(Ordering::Relaxed) < start + count {
            assert!(Instant::now() < deadline, "the traffic stalled: {step}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.ops.load(Ordering::Relaxed)
    }

    async fn stop(&self, mut task: Loop) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        (&mut task.0).await.expect("the traffic loop panicked");
        let problems = self.problems.lock().unwrap();
        let ops = self.ops.load(Ordering::Relaxed);
        assert!(
            problems.is_empty(),
            "{} of {ops} calls went wrong, first: {:?}",
            problems.len(),
            &problems[..problems.len().min(5)]
        );
        ops
    }
}

/// The traffic loop's task, aborted if the test fails before stopping it.
struct Loop(tokio::task::JoinHandle<()>);

impl Drop for Loop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Full limiters of each algorithm in one slot, a busy limiter in the same slot and one in a
/// slot of each master: the keys, under the store's prefix.
fn limiters_in_slot(
    tag: &str,
    shards: &[Shard],
    tags: &[String],
) -> (Vec<(String, Limit)>, Vec<String>) {
    let full = ALGORITHMS
        .iter()
        .map(|&a| (format!("{{{tag}}}:{a}"), limit(3, a)))
        .collect();
    let mut open = vec![format!("{{{tag}}}:busy")];
    for shard in shards {
        let slot = shard.ranges[0].1 - 5;
        open.push(format!("{{{}}}:other", tags[usize::from(slot)]));
    }
    (full, open)
}

async fn count_keys(con: &mut redis::aio::MultiplexedConnection, slot: u16) -> i64 {
    call(con, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]).await
}

async fn fill(store: &RedisStore, full: &[(String, Limit)]) {
    for (key, limit) in full {
        for allowed in [true, true, true, false] {
            let d = store.check(key, limit, 1).await.unwrap();
            assert_eq!(d.is_admitted(), allowed, "{key}");
        }
    }
}

/// A slot that holds full limiters moves from one master to another, one key at a time, while
/// a task checks them and others: the caller never sees an error nor a decision of the failure
/// policy, and the limiters are still full on the new master.
async fn move_a_full_slot_under_traffic(cluster: &Cluster, store: &RedisStore, backend: Backend) {
    let started = Instant::now();
    let shards = cluster.shards().await;
    let (source, target) = (&shards[0], &shards[1]);
    let mut on_source = cluster.con(source.master).await;
    let mut on_target = cluster.con(target.master).await;
    // An empty slot, so that it holds only this step's limiters.
    let mut slot = source.ranges[0].0 + 100;
    while count_keys(&mut on_source, slot).await > 0 {
        slot += 1;
    }
    let tags = slot_tags("move:");
    let (full, open) = limiters_in_slot(&tags[usize::from(slot)], &shards, &tags);
    fill(store, &full).await;
    let slot_text = slot.to_string();

    let traffic = Arc::new(Traffic::default());
    let task = traffic.start(store, backend, full.clone(), open.clone());
    let mut marks = vec![("before", traffic.wait_for(200, "start").await)];
    let steps: [(&mut redis::aio::MultiplexedConnection, &str, &str); 2] = [
        (&mut on_target, "IMPORTING", &source.master_id),
        (&mut on_source, "MIGRATING", &target.master_id),
    ];
    for (con, state, id) in steps {
        let _: () = call(con, &["CLUSTER", "SETSLOT", &slot_text, state, id]).await;
    }
    marks.push(("migrating", traffic.wait_for(200, "migrating").await));
    // One key at a time, with traffic in between: for a while the slot's keys are split
    // between the two masters, and the client follows ASK to the keys already moved.
    let target_port = target.master.to_string();
    let mut moved = 0;
    loop {
        let keys: Vec<String> = call(
            &mut on_source,
            &["CLUSTER", "GETKEYSINSLOT", &slot_text, "1"],
        )
        .await;
        let Some(key) = keys.first() else { break };
        let mut migrate = vec!["MIGRATE", "127.0.0.1", &target_port, "", "0", "5000"];
        if let Some(password) = cluster.password() {
            migrate.extend(["AUTH", password]);
        }
        migrate.extend(["KEYS", key]);
        let _: () = call(&mut on_source, &migrate).await;
        moved += 1;
        marks.push(("keys split", traffic.wait_for(100, "keys split").await));
    }
    assert_eq!(
        moved, 4,
        "the slot held the three full limiters and the busy one"
    );
    for shard in [target, source, &shards[2]] {
        let mut con = cluster.con(shard.master).await;
        let args = ["CLUSTER", "SETSLOT", &slot_text, "NODE", &target.master_id];
        let _: () = call(&mut con, &args).await;
        marks.push(("owner set", traffic.wait_for(100, "owner set").await));
    }
    let ops = traffic.stop(task).await;
    cluster.wait_until_stable().await;
    assert_eq!(cluster.shard_of_slot(slot).await.master, target.master);

    assert_eq!(
        (
            count_keys(&mut on_source, slot).await,
            count_keys(&mut on_target, slot).await
        ),
        (0, 4)
    );
    for (key, limit) in &full {
        let d = store.check(key, limit, 1).await.unwrap();
        assert_eq!(
            (d.backend, d.is_admitted(), d.remaining),
            (backend, false, 0),
            "{key}"
        );
    }
    let fixed = format!("{PREFIX}{}", full[0].0);
    assert_eq!(get_on(&mut on_target, &fixed).await, Ok(Some("3".into())));
    assert_eq!(get_on(&mut on_source, &fixed).await, Err("MOVED".into()));
    println!(
        "{backend}: 1 slot ({slot}, {moved} keys) moved from {} to {} under {ops} checks \
         without an error, in {:?}; calls at each step {marks:?}",
        source.master,
        target.master,
        started.elapsed()
    );
}

/// `CLUSTER FAILOVER` on the replica of the master that holds a full limiter and a partly used
/// one, under traffic: after the roles swap, the full one is still full and the other one
/// counts on from where it was.
async fn fail_over_under_traffic(cluster: &Cluster, store: &RedisStore, backend: Backend) {
    let started = Instant::now();
    let shards = cluster.shards().await;
    let tags = slot_tags("failover:");
    // A slot of the third master, which the resharding step did not touch.
    let shard = &shards[2];
    let slot = shard.ranges[shard.ranges.len() - 1].1 - 10;
    let (full, open) = limiters_in_slot(&tags[usize::from(slot)], &shards, &tags);
    fill(store, &full).await;
    let partial = format!("{{{}}}:partial", tags[usize::from(slot)]);
    let five = limit(5, Algorithm::Sliding);
    assert_eq!(store.check(&partial, &five, 1).await.unwrap().remaining, 4);
    let (old_master, replica) = (shard.master, shard.replicas[0]);
    let had_script = script_loaded(cluster, replica).await;

    let traffic = Arc::new(Traffic::default());
    let task = traffic.start(store, backend, full.clone(), open);
    let before = traffic.wait_for(300, "start").await;
    let mut on_replica = cluster.con(replica).await;
    let _: () = call(&mut on_replica, &["CLUSTER", "FAILOVER"]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let role: Vec<redis::Value> = call(&mut on_replica, &["ROLE"]).await;
        if matches!(&role[0], redis::Value::BulkString(b) if b == b"master") {
            break;
        }
        assert!(Instant::now() < deadline, "the replica is not promoted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let promoted = traffic.ops.load(Ordering::Relaxed);
    cluster.wait_until_stable().await;
    traffic.wait_for(300, "after the failover").await;
    let ops = traffic.stop(task).await;
    let now = cluster.shard_of_slot(slot).await;
    assert_eq!(
        (now.master, now.replicas.as_slice()),
        (replica, &[old_master][..])
    );

    for (key, limit) in &full {
        let d = store.check(key, limit, 1).await.unwrap();
        assert_eq!(
            (d.backend, d.is_admitted(), d.remaining),
            (backend, false, 0),
            "{key}"
        );
    }
    let d = store.check(&partial, &five, 1).await.unwrap();
    assert_eq!((d.backend, d.remaining), (backend, 3), "nothing was reset");
    let fixed = format!("{PREFIX}{}", full[0].0);
    assert_eq!(get_on(&mut on_replica, &fixed).await, Ok(Some("3".into())));
    // The script runs on the new master: sent whole after NOSCRIPT if it was missing there.
    let mut script = String::new();
    if backend == Backend::Script {
        assert!(script_loaded(cluster, replica).await);
        script = format!("; the promoted replica had the script before: {had_script}");
    }
    println!(
        "{backend}: failover of {old_master} to {replica}: {before} checks before it, {} while \
         the roles swapped, {} after, {ops} in all, without an error; done in {:?}{script}",
        promoted - before,
        ops - promoted,
        started.elapsed()
    );
}

/// `clear_all` deletes every key under the prefix on every master, and nothing else.
async fn clear_all_on_every_master(cluster: &Cluster, store: &RedisStore) {
    let keep = connect(cluster, "keep:").await;
    let tags = slot_tags("keep:");
    for slot in (0..SLOTS).step_by(41) {
        let key = format!("{{{}}}", tags[usize::from(slot)]);
        keep.check(&key, &limit(5, Algorithm::Fixed), 1)
            .await
            .unwrap();
    }
    let count = |pattern: &'static str| async move {
        let mut total = 0;
        for shard in cluster.shards().await {
            total += scan_keys(&mut cluster.con(shard.master).await, pattern)
                .await
                .len();
        }
        total
    };
    let (ours, theirs) = (count("ratelimit:*").await, count("keep:*").await);
    assert!(ours > CHECKS && theirs == 400, "{ours} and {theirs} keys");
    let started = Instant::now();
    let deleted = store.clear_all().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(deleted, ours as u64);
    assert_eq!(
        (count("ratelimit:*").await, count("keep:*").await),
        (0, theirs)
    );
    println!(
        "clear_all deleted {deleted} keys on {} masters in {elapsed:?}, and left the {theirs} \
         keys of another prefix",
        cluster.shards().await.len()
    );
}

/// `check_all` is one command: in a cluster, its keys share a slot through one hash tag, and
/// the call goes to the master of that slot; keys in several slots get `CROSSSLOT`, and nothing
/// is spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_all_in_a_cluster_needs_one_hash_tag() {
    use ratelimit_client::{Key, LimitCheck, Reserved};
    for module in [true, false] {
        let cluster = Cluster::start(module, None).await;
        let store = connect(&cluster, PREFIX).await;
        let (small, large) = (limit(2, Algorithm::Fixed), limit(100, Algorithm::Gcra));
        let tagged = [
            LimitCheck::new(Key::new("rps", "{user:7}"), &small, 1),
            LimitCheck::new(Key::new("rpd", "{user:7}"), &large, 5),
        ];
        for _ in 0..2 {
            let all = store.check_all(&tagged).await.unwrap();
            assert!(all.is_admitted() && all.backend.is_redis(), "{all:?}");
        }
        assert_eq!(
            store
                .check_all(&tagged)
                .await
                .unwrap()
                .violated()
                .collect::<Vec<_>>(),
            [0]
        );
        // Both keys are stored (on the master of the tag's slot, and maybe already its replica).
        let mut found = 0;
        for port in cluster.ports() {
            let mut con = cluster.con(port).await;
            found += scan_keys(&mut con, "ratelimit:rp*:{user:7}").await.len();
        }
        assert!((2..=4).contains(&found), "{found} copies of the two keys");

        let untagged = [
            LimitCheck::new(Key::new("rps", "user:8"), &small, 1),
            LimitCheck::new(Key::new("rpd", "user:8"), &large, 1),
        ];
        let error = store.check_all(&untagged).await.unwrap_err();
        assert_eq!(error.code(), Some("CROSSSLOT"), "{error}");

        // A reservation settles on its slot's master.
        let Reserved::Held(reservation) = store.reserve("tpm:{user:7}", &large, 40).await.unwrap()
        else {
            panic!("admitted");
        };
        assert_eq!(reservation.settle(10).await.unwrap().refunded, 30);
    }
}
