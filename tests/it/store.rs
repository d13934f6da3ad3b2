//! The store's contract, run against SQLite and PostgreSQL alike.

use crate::support::TestDb;
use intake::domain::user::{Scopes, SftpUser};
use intake::domain::{
    AccountId, AccountSettings, Address, AddressKind, Addresses, CreateCustomer, CustomerRef, JsonObject, PhoneCheck,
};
use intake::ingest::upsert::{apply, BatchRecord, Expect, Hints, RecordOutcome, UpsertOutcome, Writes};
use intake::store::{Job, JobLease, JobProgress, JobStatus, NewJob, Store, StoreError};
use serde_json::{json, Map, Value};

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn command(r: &str, addresses: &[&str], metadata: Value, appdata: Value) -> CreateCustomer {
    let addresses =
        addresses.iter().map(|a| Address::parse(a, AddressKind::Any, None, PhoneCheck::Possible).unwrap()).collect();
    CreateCustomer::new(
        CustomerRef::parse(r).unwrap(),
        Addresses::new(addresses).unwrap(),
        JsonObject::metadata(object(metadata)),
        JsonObject::appdata(object(appdata)),
    )
}

/// A completed job's summary, as publishing would record it.
fn summary_of(job: &Job) -> intake::domain::Summary {
    intake::domain::Summary {
        account: job.account.clone(),
        file: job.file_name.clone(),
        job_id: job.job_id.to_string(),
        sha256: job.sha256.clone(),
        bytes: job.bytes,
        status: JobStatus::Completed,
        rows: 0,
        created: 0,
        updated: 0,
        unchanged: 0,
        failed: 0,
        received_at: job.received_at,
        started_at: job.received_at,
        finished_at: job.received_at,
        error: None,
        errors_by_code: Default::default(),
        dry_run: false,
        failed_file: None,
        mapping: None,
        ignored_columns: Vec::new(),
        pgp: None,
    }
}

fn account(avid: &str) -> AccountSettings {
    AccountSettings::new(AccountId::parse(avid).unwrap())
}

/// A heartbeat timeout no test outlives: no owner is stale.
const LIVE: std::time::Duration = std::time::Duration::from_secs(3600);

fn new_job(job_id: &str, account: &str) -> NewJob {
    NewJob {
        job_id: job_id.into(),
        account: account.into(),
        file_name: "x.csv".into(),
        spool_path: "/nowhere".into(),
        sha256: String::new(),
        bytes: 0,
        uploader: None,
        scopes: Scopes::ALL,
        source_key: None,
        kind: Default::default(),
        owner: None,
    }
}

/// A job owned by `owner`, as a worker holds one while it applies batches.
async fn owned_job(store: &Store, owner: &str) -> JobLease {
    let id = uuid::Uuid::new_v4().to_string();
    store.create_job(&new_job(&id, &format!("jobs-{id}"))).await.unwrap();
    store.mark_queued(&id, None, Scopes::ALL).await.unwrap();
    let claimed = store.claim_job(owner, LIVE, &[]).await.unwrap().unwrap();
    assert_eq!(claimed.job.job_id.as_str(), id);
    claimed.lease
}

fn records(commands: &[CreateCustomer]) -> Vec<BatchRecord<'_>> {
    commands
        .iter()
        .enumerate()
        .map(|(i, c)| BatchRecord { line: i as u64 + 2, claim: Some(c.customer_ref().as_str()), command: Some(c) })
        .collect()
}

/// Applies valid commands as one batch of a new job and commits.
async fn upsert(store: &Store, avid: &str, may_update: bool, commands: &[CreateCustomer]) -> Vec<UpsertOutcome> {
    let owner = uuid::Uuid::new_v4().to_string();
    let lease = owned_job(store, &owner).await;
    let mut batch = store.begin_batch(avid).await.unwrap();
    let scopes = if may_update { Scopes::ALL } else { Scopes::CREATE_ONLY };
    let job = lease.job_id();
    let outcomes =
        apply(&mut batch, job, avid, scopes, &records(commands), Writes::Apply, &mut Hints::default()).await.unwrap();
    batch.commit(&lease, &JobProgress::default()).await.unwrap();
    outcomes
        .into_iter()
        .map(|o| match o {
            RecordOutcome::Applied(u) => u,
            other => panic!("{other:?}"),
        })
        .collect()
}

async fn new_refs_are_created_and_existing_ones_merged(db: TestDb) {
    let store = db.store().await;
    store.add_account(&account("acme")).await.unwrap();
    let first = upsert(
        &store,
        "acme",
        true,
        &[command(
            "c1",
            &["+15555001234", "ann@example.com"],
            json!({"name": "Ann", "city": "Oslo"}),
            json!({"crm": 1}),
        )],
    )
    .await;
    let UpsertOutcome::Created(id) = &first[0] else { panic!("{first:?}") };

    // Same values, a differently written email domain: unchanged.
    let again = upsert(
        &store,
        "acme",
        true,
        &[command("c1", &["+1 555 500 1234", "ann@EXAMPLE.com"], json!({"name": "Ann"}), json!({}))],
    )
    .await;
    assert_eq!(again, [UpsertOutcome::Unchanged(id.clone())]);

    // Addresses replaced, metadata merged at top level, absent keys kept.
    let changed = upsert(
        &store,
        "acme",
        true,
        &[command("c1", &["bob@example.com"], json!({"city": "Bergen"}), json!({"tier": "gold"}))],
    )
    .await;
    assert_eq!(changed, [UpsertOutcome::Updated(id.clone())]);
    let stored = store.get_customer("acme", "c1").await.unwrap().unwrap();
    assert_eq!(stored.customer_id, *id);
    assert_eq!(stored.addresses, json!([{"type": "email", "value": "bob@example.com"}]));
    assert_eq!(Value::Object(stored.metadata), json!({"name": "Ann", "city": "Bergen"}));
    assert_eq!(Value::Object(stored.appdata), json!({"crm": 1, "tier": "gold"}));
}

async fn without_update_scope_an_existing_ref_fails(db: TestDb) {
    let store = db.store().await;
    store.add_account(&account("acme")).await.unwrap();
    upsert(&store, "acme", true, &[command("c1", &["+15555001234"], json!({}), json!({}))]).await;
    let outcomes = upsert(
        &store,
        "acme",
        false,
        &[
            command("c1", &["+15555001299"], json!({}), json!({})),
            command("c2", &["+15555001299"], json!({}), json!({})),
        ],
    )
    .await;
    assert_eq!(outcomes[0], UpsertOutcome::RefExists);
    assert!(matches!(outcomes[1], UpsertOutcome::Created(_)));
    let kept = store.get_customer("acme", "c1").await.unwrap().unwrap();
    assert_eq!(kept.addresses, json!([{"type": "phone", "value": "+15555001234"}]));
}

async fn refs_are_per_account(db: TestDb) {
    let store = db.store().await;
    for a in ["acme", "globex"] {
        store.add_account(&account(a)).await.unwrap();
        let out = upsert(&store, a, false, &[command("same-ref", &["+15555001234"], json!({}), json!({}))]).await;
        assert!(matches!(out[0], UpsertOutcome::Created(_)), "{a}: {out:?}");
    }
    assert_eq!(store.count_customers("acme").await.unwrap(), 1);
    assert_eq!(store.count_customers("globex").await.unwrap(), 1);
}

async fn a_batch_that_is_not_committed_leaves_nothing(db: TestDb) {
    let store = db.store().await;
    store.add_account(&account("acme")).await.unwrap();
    {
        let mut batch = store.begin_batch("acme").await.unwrap();
        let c = [command("c1", &["+15555001234"], json!({}), json!({}))];
        apply(&mut batch, "some-job", "acme", Scopes::ALL, &records(&c), Writes::Apply, &mut Hints::default())
            .await
            .unwrap();
        // dropped: rolled back, as after a crash
    }
    assert_eq!(store.count_customers("acme").await.unwrap(), 0);
}

async fn the_first_record_of_a_ref_claims_it_across_batches(db: TestDb) {
    let store = db.store().await;
    // The same outcomes whether a chunk's new rows are inserted first or
    // looked up first, and whether the job filters the claims it asks about
    // (a fresh job) or asks about all (a resumed one); each in an account
    // and jobs of its own.
    claims_across_batches(&store, Expect::New, false, "acme", "job-1").await;
    claims_across_batches(&store, Expect::New, true, "initech", "job-3").await;
    claims_across_batches(&store, Expect::Existing, true, "hooli", "job-5").await;
}

async fn claims_across_batches(store: &Store, strategy: Expect, fresh: bool, acme: &str, job_1: &str) {
    store.add_account(&account(acme)).await.unwrap();
    upsert(store, acme, true, &[command("old", &["+15555001234"], json!({}), json!({}))]).await;
    store.create_job(&new_job(job_1, acme)).await.unwrap();
    store.mark_queued(job_1, None, Scopes::ALL).await.unwrap();
    let me = format!("me-{job_1}");
    let claimed = store.claim_job(&me, LIVE, &[]).await.unwrap().unwrap();
    assert_eq!(claimed.job.job_id.as_str(), job_1);
    let valid = |r: &str| command(r, &["+15555001234"], json!({}), json!({}));
    let (a, old, b) = (valid("a"), valid("old"), valid("b"));
    let rec = |line, claim, command| BatchRecord { line, claim, command };
    let mut hints = if fresh { Hints::fresh(11) } else { Hints::default() };
    hints.expect = strategy;
    // Batch 1: `a` created; `bad` invalid (claims it anyway); `old` unchanged; `a` again.
    let mut batch = store.begin_batch(acme).await.unwrap();
    let first = apply(
        &mut batch,
        job_1,
        acme,
        Scopes::ALL,
        &[
            rec(2, Some("a"), Some(&a)),
            rec(3, Some("bad"), None),
            rec(4, Some("old"), Some(&old)),
            rec(5, Some("a"), Some(&a)),
            rec(6, None, None),
        ],
        Writes::Apply,
        &mut hints,
    )
    .await
    .unwrap();
    assert!(matches!(first[0], RecordOutcome::Applied(UpsertOutcome::Created(_))), "{first:?}");
    assert_eq!(first[1], RecordOutcome::Invalid);
    assert!(matches!(first[2], RecordOutcome::Applied(UpsertOutcome::Unchanged(_))), "{first:?}");
    assert_eq!(first[3], RecordOutcome::Duplicate(2));
    assert_eq!(first[4], RecordOutcome::Invalid);
    let progress = JobProgress { records_done: 5, results_offset: 99, created: 1, ..Default::default() };
    batch.commit(&claimed.lease, &progress).await.unwrap();
    // Batch 2: every earlier claim is seen, whatever became of its record.
    let mut batch = store.begin_batch(acme).await.unwrap();
    hints.expect = strategy;
    let bad_now_valid = valid("bad");
    let second = apply(
        &mut batch,
        job_1,
        acme,
        Scopes::ALL,
        &[
            rec(7, Some("a"), None),
            rec(8, Some("bad"), Some(&bad_now_valid)),
            rec(9, Some("old"), Some(&old)),
            rec(10, Some("b"), Some(&b)),
            rec(11, Some("a"), Some(&a)),
        ],
        Writes::Apply,
        &mut hints,
    )
    .await
    .unwrap();
    assert_eq!(second[..3], [RecordOutcome::Duplicate(2), RecordOutcome::Duplicate(3), RecordOutcome::Duplicate(4)]);
    assert!(matches!(second[3], RecordOutcome::Applied(UpsertOutcome::Created(_))));
    // A second duplicate in the same batch names the file's first line too, not the batch's.
    assert_eq!(second[4], RecordOutcome::Duplicate(2));
    // Another job's claims are its own.
    let other = apply(
        &mut batch,
        &format!("{job_1}-other"),
        acme,
        Scopes::ALL,
        &[rec(2, Some("zzz"), None)],
        Writes::Apply,
        &mut Hints::default(),
    )
    .await
    .unwrap();
    assert_eq!(other, [RecordOutcome::Invalid]);
    drop(batch);
    let stored = store.get_job(job_1).await.unwrap().unwrap();
    assert_eq!(stored.progress, progress);
}

async fn a_job_is_never_claimed_twice(db: TestDb) {
    let store = db.store().await;
    for i in 0..6 {
        let job = new_job(&format!("job-{i}"), &format!("acct-{}", i % 3));
        store.create_job(&job).await.unwrap();
    }
    // Still arriving: not claimable until the file is in the spool.
    assert!(store.claim_job("p1", LIVE, &[]).await.unwrap().is_none());
    for i in 0..6 {
        store.mark_queued(&format!("job-{i}"), None, Scopes::ALL).await.unwrap();
    }
    let mut tasks = Vec::new();
    for owner in ["p1", "p2", "p3"] {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            // As a worker does: the accounts of its open jobs are busy.
            let (mut mine, mut busy) = (Vec::new(), Vec::new());
            while let Some(claimed) = store.claim_job(owner, LIVE, &busy).await.unwrap() {
                busy.push(claimed.job.account);
                mine.push((claimed.job.job_id, owner, claimed.lease));
            }
            mine
        }));
    }
    let mut claimed: Vec<(intake::domain::JobId, &str, JobLease)> = Vec::new();
    for t in tasks {
        claimed.extend(t.await.unwrap());
    }
    claimed.sort_by(|a, b| a.0.cmp(&b.0));
    // One job per account at a time, oldest first, whoever claims.
    let ids: Vec<&str> = claimed.iter().map(|(id, ..)| id.as_str()).collect();
    assert_eq!(ids, ["job-0", "job-1", "job-2"]);
    let mut leases: std::collections::HashMap<String, JobLease> =
        claimed.into_iter().map(|(id, _, lease)| (id.to_string(), lease)).collect();

    // A running job with a live owner is not taken over; a stale one is.
    assert!(store.claim_job("p4", LIVE, &[]).await.unwrap().is_none());
    // Stale on the database's clock: no heartbeat since a moment ago.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let taken = store.claim_job("p4", std::time::Duration::ZERO, &["acct-0".into()]).await.unwrap().unwrap();
    let new_lease = taken.lease;
    let taken = taken.job;
    assert!(["job-1", "job-2"].contains(&taken.job_id.as_str()), "busy accounts are skipped: {}", taken.job_id);
    assert_eq!(store.get_job(&taken.job_id).await.unwrap().unwrap().status, JobStatus::Running);

    // Its former owner can no longer commit: nothing of its batch lands.
    let mut batch = store.begin_batch(&taken.account).await.unwrap();
    let c = [command("late", &["+15555001234"], json!({}), json!({}))];
    apply(&mut batch, &taken.job_id, &taken.account, Scopes::ALL, &records(&c), Writes::Apply, &mut Hints::default())
        .await
        .unwrap();
    let former = &leases[taken.job_id.as_str()];
    assert_ne!(former, &new_lease);
    let err = batch.commit(former, &JobProgress::default()).await.unwrap_err();
    assert!(matches!(err, StoreError::NotOwner(_)), "{err}");
    assert_eq!(store.count_customers(&taken.account).await.unwrap(), 0, "a fenced-off batch commits nothing");

    // When an account's job finishes, its next one can be claimed; a lease
    // that lost its job finishes nothing.
    let summary = summary_of(&store.get_job("job-0").await.unwrap().unwrap());
    let lost = leases.remove(taken.job_id.as_str()).unwrap();
    assert!(matches!(store.finish_job(lost, &summary).await, Err(StoreError::NotOwner(_))));
    store.finish_job(leases.remove("job-0").unwrap(), &summary).await.unwrap();
    let done = store.get_job("job-0").await.unwrap().unwrap();
    assert_eq!((done.status, done.phase), (JobStatus::Completed, intake::store::JobPhase::Done));
    let next = store.claim_job("p5", LIVE, &[]).await.unwrap().unwrap();
    assert_eq!(next.job.job_id.as_str(), "job-3");
}

async fn accounts_and_users_are_managed(db: TestDb) {
    let store = db.store().await;
    store.add_account(&account("acme")).await.unwrap();
    assert!(matches!(store.add_account(&account("acme")).await, Err(StoreError::AlreadyExists(_))));
    let user = SftpUser {
        username: "acme-ops".into(),
        account: AccountId::parse("acme").unwrap(),
        public_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0 test".into()],
        password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
        scopes: Scopes { create: true, update: false },
    };
    store.add_user(&user).await.unwrap();
    assert_eq!(store.find_user("acme-ops").await.unwrap(), Some(user.clone()));
    assert!(matches!(store.add_user(&user).await, Err(StoreError::AlreadyExists(_))));
    let orphan = SftpUser { username: "x".into(), account: AccountId::parse("nope").unwrap(), ..user.clone() };
    assert!(matches!(store.add_user(&orphan).await, Err(StoreError::NotFound(_))));
    assert_eq!(store.list_users().await.unwrap().len(), 1);
    store.remove_account("acme").await.unwrap();
    assert_eq!(store.find_user("acme-ops").await.unwrap(), None, "users go with their account");
    assert!(matches!(store.remove_user("acme-ops").await, Err(StoreError::NotFound(_))));
}

/// A chunk of mostly existing refs makes the next one look up first; a
/// chunk of mostly new ones, insert first. Outcomes are the same either way.
async fn a_reimport_is_looked_up_first(db: TestDb) {
    let store = db.store().await;
    store.add_account(&account("acme")).await.unwrap();
    let row = |r: &str, city: &str| command(r, &["+15555001234"], json!({"city": city}), json!({}));
    let first = [row("r1", "Oslo"), row("r2", "Oslo"), row("r3", "Oslo"), row("r4", "Oslo")];
    upsert(&store, "acme", true, &first).await;
    let mut hints = Hints::default();
    // Each chunk as the first of an upload of its own (a ref is claimed once per upload).
    let run = async |commands: &[CreateCustomer], hints: &mut Hints| {
        let owner = uuid::Uuid::new_v4().to_string();
        let lease = owned_job(&store, &owner).await;
        let mut batch = store.begin_batch("acme").await.unwrap();
        let out =
            apply(&mut batch, lease.job_id(), "acme", Scopes::ALL, &records(commands), Writes::Apply, hints).await;
        batch.commit(&lease, &JobProgress::default()).await.unwrap();
        out.unwrap()
    };
    let kind = |o: &RecordOutcome| match o {
        RecordOutcome::Applied(UpsertOutcome::Created(_)) => "created",
        RecordOutcome::Applied(UpsertOutcome::Updated(_)) => "updated",
        RecordOutcome::Applied(UpsertOutcome::Unchanged(_)) => "unchanged",
        other => panic!("{other:?}"),
    };
    // Inserted first: every ref was taken.
    let out = run(&[row("r1", "Lima"), row("r2", "Oslo")], &mut hints).await;
    assert_eq!(out.iter().map(kind).collect::<Vec<_>>(), ["updated", "unchanged"]);
    assert_eq!(hints.expect, Expect::Existing);
    // Looked up first: the same rules, and a new ref among them is created.
    let out = run(&[row("r3", "Lima"), row("r4", "Oslo"), row("n1", "Oslo")], &mut hints).await;
    assert_eq!(out.iter().map(kind).collect::<Vec<_>>(), ["updated", "unchanged", "created"]);
    assert_eq!(hints.expect, Expect::Existing);
    // Mostly new again: back to inserting first.
    let out = run(&[row("n2", "Oslo"), row("n3", "Oslo"), row("r1", "Lima")], &mut hints).await;
    assert_eq!(out.iter().map(kind).collect::<Vec<_>>(), ["created", "created", "unchanged"]);
    assert_eq!(hints.expect, Expect::New);
    let stored = store.get_customer("acme", "r3").await.unwrap().unwrap();
    assert_eq!(stored.metadata.get("city"), Some(&json!("Lima")));
    assert_eq!(store.count_customers("acme").await.unwrap(), 7);
}

/// A batch's new customers get their ids in the order of their refs,
/// whatever the file's order: ids ascend as they are made, so both of the
/// table's keys are written in order (each index page once a batch), as a
/// bulk load of sorted rows would.
async fn new_customers_get_ids_in_the_order_of_their_refs(db: TestDb) {
    let store = db.store().await;
    for (avid, expect) in [("acme", Expect::New), ("globex", Expect::Existing)] {
        store.add_account(&account(avid)).await.unwrap();
        let refs = ["r5", "r1", "r9", "r4", "r2", "r8", "r3"];
        let commands: Vec<CreateCustomer> =
            refs.iter().map(|r| command(r, &["+15555001234"], json!({}), json!({}))).collect();
        let owner = uuid::Uuid::new_v4().to_string();
        let lease = owned_job(&store, &owner).await;
        let mut batch = store.begin_batch(avid).await.unwrap();
        let mut hints = Hints::default();
        hints.expect = expect;
        let outcomes =
            apply(&mut batch, lease.job_id(), avid, Scopes::ALL, &records(&commands), Writes::Apply, &mut hints)
                .await
                .unwrap();
        batch.commit(&lease, &JobProgress::default()).await.unwrap();
        let mut created: Vec<(&str, String)> = refs
            .iter()
            .zip(outcomes)
            .map(|(r, o)| match o {
                RecordOutcome::Applied(UpsertOutcome::Created(id)) => (*r, id),
                other => panic!("{avid}: {r} was not created: {other:?}"),
            })
            .collect();
        created.sort();
        let ids: Vec<&String> = created.iter().map(|(_, id)| id).collect();
        assert!(ids.is_sorted(), "{avid} ({expect:?}): ids by ref {created:?}");
        for (r, id) in &created {
            assert_eq!(&store.get_customer(avid, r).await.unwrap().unwrap().customer_id, id, "{avid}: {r}");
        }
    }
}

crate::on_both_backends!(
    a_reimport_is_looked_up_first,
    new_customers_get_ids_in_the_order_of_their_refs,
    new_refs_are_created_and_existing_ones_merged,
    without_update_scope_an_existing_ref_fails,
    refs_are_per_account,
    a_batch_that_is_not_committed_leaves_nothing,
    the_first_record_of_a_ref_claims_it_across_batches,
    a_job_is_never_claimed_twice,
    accounts_and_users_are_managed,
);

/// A process frozen inside a batch (SIGSTOP, a paused VM) holds its
/// transaction's locks: the account's advisory lock, the refs it inserted.
/// The process that takes its job over ends that transaction, so the job
/// goes on at once instead of waiting for the frozen one to wake up; the
/// frozen batch, if it ever goes on, commits nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_owners_open_batch_is_ended_when_its_job_is_taken_over() {
    let Some(db) = TestDb::postgres().await else { return };
    let (frozen, taker) = (db.store().await, db.store().await);
    assert_ne!(frozen.instance(), taker.instance(), "each store is an instance of its own");
    frozen.add_account(&account("acme")).await.unwrap();
    frozen.create_job(&new_job("held", "acme")).await.unwrap();
    frozen.mark_queued("held", None, Scopes::ALL).await.unwrap();
    let frozen_owner = frozen.owner_name("node-a");
    let job = frozen.claim_job(&frozen_owner, LIVE, &[]).await.unwrap().unwrap();
    let c = [command("r1", &["+15555001234"], json!({}), json!({}))];
    let mut held = frozen.begin_batch("acme").await.unwrap();
    apply(&mut held, "held", "acme", Scopes::ALL, &records(&c), Writes::Apply, &mut Hints::fresh(1)).await.unwrap();
    // The batch stays open, as in a process that stopped here.

    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let taker_owner = taker.owner_name("node-b");
    let taken = taker.claim_job(&taker_owner, std::time::Duration::ZERO, &[]).await.unwrap().unwrap();
    assert_eq!(taken.job.job_id, job.job.job_id);
    let resumed = async {
        let mut batch = taker.begin_batch("acme").await.unwrap();
        let out = apply(&mut batch, "held", "acme", Scopes::ALL, &records(&c), Writes::Apply, &mut Hints::default())
            .await
            .unwrap();
        batch.commit(&taken.lease, &JobProgress::default()).await.unwrap();
        out
    };
    // Without the fence this waits for the frozen transaction (the test
    // store's idle-in-transaction timeout is 60 s).
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), resumed)
        .await
        .expect("the new owner's batch was held up by the frozen one's transaction");
    assert!(matches!(out[0], RecordOutcome::Applied(UpsertOutcome::Created(_))), "{:?}", out[0]);
    let late = held.commit(&job.lease, &JobProgress::default()).await;
    assert!(late.is_err(), "the frozen batch commits nothing");
    assert_eq!(taker.count_customers("acme").await.unwrap(), 1);
}
