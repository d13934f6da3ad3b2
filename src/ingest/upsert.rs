//! The upsert rules (README, "Upserts"), decided here once for both backends: the
//! store answers questions (which refs this file claimed already, which
//! customers exist and with what) and applies the writes decided here.
//!
//! Key: (account, ref). A new ref is created; an existing one is updated
//! (addresses replaced, metadata/appdata keys of the row set, others kept)
//! or left `unchanged` when nothing would change — if the uploader may
//! update; else the row fails with `ref_exists`. The first record of a file
//! carrying a ref claims it, valid or not; later ones are `duplicate_ref`.

use crate::domain::customer::MAX_REF_CHARS;
use crate::domain::user::Scopes;
use crate::domain::CreateCustomer;
use crate::store::{claim_key, Batch, NewCustomer, StoreError, StoredCustomer};
use std::collections::HashMap;

/// One record of a batch, as the rules need it.
#[derive(Debug, Clone, Copy)]
pub struct BatchRecord<'a> {
    pub line: u64,
    /// The trimmed ref the record carries (valid or not): the first record
    /// of a file carrying a ref claims it.
    pub claim: Option<&'a str>,
    /// The command, when the record is valid.
    pub command: Option<&'a CreateCustomer>,
}

/// What happened to one valid row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpsertOutcome {
    Created(String),
    Updated(String),
    Unchanged(String),
    /// The ref exists and the user may not update.
    RefExists,
}

/// What became of one record of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    /// An earlier record of the file (this line) carries the same ref.
    Duplicate(u64),
    /// Invalid; its ref (if any) is now claimed.
    Invalid,
    Applied(UpsertOutcome),
}

/// What the database says about a batch's refs.
#[derive(Debug, Default)]
pub struct Known<'a> {
    /// Ref keys this job claimed in earlier batches without leaving a trace
    /// in `customers`, with the claiming line.
    pub claimed: HashMap<String, u64>,
    /// Existing customers of the account, by ref.
    pub existing: HashMap<String, StoredCustomer>,
    /// Customers created already for this batch (their ref was free), by
    /// ref, with their id.
    pub inserted: foldhash::HashMap<&'a str, String>,
}

/// The writes a batch makes, and each record's outcome.
#[derive(Debug, Default)]
pub struct Decided<'a> {
    pub outcomes: Vec<RecordOutcome>,
    pub inserts: Vec<NewCustomer<'a>>,
    pub updates: Vec<StoredCustomer>,
    /// (ref key, line): claims that leave no trace in `customers`.
    pub claims: Vec<(String, u64)>,
}

/// The refs of a batch to ask the database about: the first record of the
/// batch carrying each ref (later ones follow it), in the order of their
/// refs, as claim keys and as refs. In that order, the customers a batch
/// creates get their ids (which ascend as they are made) in the order they
/// are inserted: both of the table's keys are then written in order, each
/// index page once, whatever the file's order of refs.
fn firsts<'a>(records: &[BatchRecord<'a>]) -> (Vec<usize>, Vec<Option<usize>>) {
    // foldhash, not SipHash: a job hashes each ref of its file several times.
    let mut first_in_batch: foldhash::HashMap<&str, usize> =
        HashMap::with_capacity_and_hasher(records.len(), Default::default());
    let mut follows = vec![None; records.len()];
    let mut firsts = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let Some(claim) = r.claim else { continue };
        match first_in_batch.get(claim) {
            Some(&first) => follows[i] = Some(first),
            None => {
                first_in_batch.insert(claim, i);
                firsts.push(i);
            }
        }
    }
    firsts.sort_unstable_by_key(|&i| records[i].claim);
    (firsts, follows)
}

/// How a batch is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writes {
    /// Customers are created and updated.
    Apply,
    /// A dry run: every outcome is decided as for `Apply`, nothing is
    /// written to customers (only the claims, so later batches of the file
    /// see its duplicates). A customer that would be created has no id.
    DryRun,
}

/// What a job expects of the valid rows of its next chunk, from what its
/// last chunk held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Expect {
    /// Mostly new refs (a first import): inserted before anything is looked
    /// up; only the refs that were taken are looked up.
    #[default]
    New,
    /// Mostly existing refs (a re-import): looked up first, and only the
    /// ones found free are inserted (no insert attempt that fails per row).
    Existing,
}

/// What a job has learnt from its earlier chunks, to ask the database less.
#[derive(Default)]
pub struct Hints {
    /// New or existing refs, as the last chunk held.
    pub expect: Expect,
    /// Every key this job recorded in `job_refs` (and false positives). `None`
    /// (a job resumed after a restart or a fault): the keys of earlier runs
    /// are unknown, so every key is asked about.
    claimed: Option<Filter>,
    /// Every key this job claimed, however (and false positives): a key in
    /// it may be a duplicate of a row this job created, so it is looked up
    /// rather than copied in at once (a copy that meets an existing ref is
    /// undone, and the rest of its transaction inserts row by row). `None`
    /// for a resumed job, or once more keys went in than it was sized for
    /// (its answers would be "maybe" for most keys).
    seen: Option<(Filter, usize)>,
}

/// A set of claim keys that may answer "maybe" for a key not in it (about
/// 1 % of them), never "no" for one in it.
type Filter = fastbloom::BloomFilter<foldhash::fast::RandomState>;

/// Claim keys a job's filter holds at a 1 % false-positive rate; past that,
/// more keys are asked about (about 1.2 MB at most per job).
const MAX_FILTERED_CLAIMS: usize = 1_000_000;

impl Hints {
    /// For a job starting on its first record, `rows` records long: it has
    /// claimed nothing yet, and only the keys it claims are ever asked about.
    pub fn fresh(rows: u64) -> Hints {
        let capacity = (rows as usize).clamp(1_000, MAX_FILTERED_CLAIMS);
        let filter = || {
            fastbloom::BloomFilter::with_false_pos(0.01)
                .hasher(foldhash::fast::RandomState::default())
                .expected_items(capacity)
        };
        Hints { expect: Expect::New, claimed: Some(filter()), seen: Some((filter(), capacity)) }
    }

    /// Whether `key` may have been claimed by this job in an earlier chunk.
    /// Without a filter (a resumed job, or more keys than it was sized for)
    /// `false`: every new row is copied in at once, a duplicate undoing its
    /// chunk's copy as before.
    fn maybe_seen(&self, key: &str) -> bool {
        self.seen.as_ref().is_some_and(|(filter, _)| filter.contains(key))
    }

    fn saw(&mut self, keys: &[String]) {
        if let Some((filter, room)) = &mut self.seen {
            if keys.len() > *room {
                self.seen = None;
                return;
            }
            *room -= keys.len();
            keys.iter().for_each(|key| {
                filter.insert(key.as_str());
            });
        }
    }

    /// The keys among `keys` this job may have claimed earlier.
    fn maybe_claimed<'k>(&self, keys: &'k [String]) -> Vec<&'k str> {
        let keys = keys.iter().map(String::as_str);
        match &self.claimed {
            Some(filter) => keys.filter(|k| filter.contains(*k)).collect(),
            None => keys.collect(),
        }
    }

    fn claimed(&mut self, claims: &[(String, u64)]) {
        if let Some(filter) = &mut self.claimed {
            claims.iter().for_each(|(key, _)| {
                filter.insert(key.as_str());
            });
        }
    }
}

/// Applies a batch of records of job `job_id` under the upsert rules.
/// A claim leaves a trace: created and updated customers carry the job and
/// line in `last_job`; other claims go to the job's claim table. Both commit
/// with the batch, so a resumed job sees every earlier claim. `hints` say
/// what to ask the database, and learn from this chunk.
pub async fn apply<'a>(
    batch: &mut Batch,
    job_id: &'a str,
    account: &str,
    scopes: Scopes,
    records: &[BatchRecord<'a>],
    writes: Writes,
    hints: &mut Hints,
) -> Result<Vec<RecordOutcome>, StoreError> {
    let (first, _) = firsts(records);
    let keys: Vec<String> = first.iter().map(|&i| claim_key(records[i].claim.unwrap_or_default())).collect();
    let insert_first = writes == Writes::Apply && hints.expect == Expect::New;
    // The new rows are made while the database looks for earlier claims.
    // Not a key this job may have claimed already: a copy that meets an
    // existing ref is undone whole.
    let new_rows = async {
        if !insert_first {
            return Vec::new();
        }
        first
            .iter()
            .zip(&keys)
            .filter(|(_, key)| !hints.maybe_seen(key))
            .filter_map(|(&i, key)| Some((key, created(records[i].command?, job_id, records[i].line))))
            .collect()
    };
    let asked = hints.maybe_claimed(&keys);
    let (claimed, new_rows) = tokio::join!(batch.claimed_refs(job_id, &asked), new_rows);
    let claimed = claimed?;
    let candidates =
        first.iter().zip(&keys).filter(|(&i, key)| records[i].command.is_some() && !claimed.contains_key(*key));
    let candidates = candidates.count();
    let mut inserted = foldhash::HashMap::default();
    if insert_first {
        let rows: Vec<NewCustomer> =
            new_rows.into_iter().filter(|(key, _)| !claimed.contains_key(*key)).map(|(_, row)| row).collect();
        let new = batch.insert_new(account, &rows).await?;
        inserted = rows
            .into_iter()
            .filter(|c| new.contains(c.customer_ref()))
            .map(|c| (c.customer_ref(), c.customer_id))
            .collect();
    }
    let refs: Vec<&str> = first
        .iter()
        .filter_map(|&i| records[i].claim)
        .filter(|c| c.chars().count() <= MAX_REF_CHARS && !inserted.contains_key(*c))
        .collect();
    let known = Known { claimed, existing: batch.existing(account, &refs).await?, inserted };
    let mut decided = decide(job_id, scopes, records, &known);
    if writes == Writes::DryRun {
        dry_run(&mut decided);
    } else if candidates > 0 {
        let new = known.inserted.len() + decided.inserts.len();
        hints.expect = if new * 2 >= candidates { Expect::New } else { Expect::Existing };
    }
    hints.claimed(&decided.claims);
    hints.saw(&keys);
    batch.insert_customers(account, &decided.inserts).await?;
    batch.update_customers(&decided.updates).await?;
    batch.record_claims(job_id, &decided.claims).await?;
    Ok(decided.outcomes)
}

/// The rules themselves: what each record of the batch becomes, given what
/// the database knows. Pure, so every rule is unit-tested here.
pub fn decide<'a>(job_id: &'a str, scopes: Scopes, records: &[BatchRecord<'a>], known: &Known<'_>) -> Decided<'a> {
    let (first, follows) = firsts(records);
    let mut decided = Decided::default();
    let mut outcomes: Vec<Option<RecordOutcome>> = vec![None; records.len()];
    for &i in &first {
        let record = &records[i];
        let claim = record.claim.unwrap_or_default();
        let key = claim_key(claim);
        let current = known.existing.get(claim);
        let earlier = known.claimed.get(&key).copied().or_else(|| {
            current.and_then(|c| c.last_job.as_ref()).filter(|(job, _)| job == job_id).map(|(_, line)| *line)
        });
        let outcome = match (earlier, record.command, current) {
            (Some(line), _, _) => RecordOutcome::Duplicate(line),
            (None, None, _) => {
                decided.claims.push((key, record.line));
                RecordOutcome::Invalid
            }
            (None, Some(_), None) if known.inserted.contains_key(claim) => {
                RecordOutcome::Applied(UpsertOutcome::Created(known.inserted[claim].clone()))
            }
            (None, Some(command), None) => {
                let row = created(command, job_id, record.line);
                let id = row.customer_id.clone();
                decided.inserts.push(row);
                RecordOutcome::Applied(UpsertOutcome::Created(id))
            }
            (None, Some(_), Some(_)) if !scopes.update => {
                decided.claims.push((key, record.line));
                RecordOutcome::Applied(UpsertOutcome::RefExists)
            }
            (None, Some(command), Some(current)) => {
                let mut merged = merged(current, command);
                if same_content(&merged, current) {
                    decided.claims.push((key, record.line));
                    RecordOutcome::Applied(UpsertOutcome::Unchanged(current.customer_id.clone()))
                } else {
                    merged.last_job = Some((job_id.to_owned(), record.line));
                    decided.updates.push(merged);
                    RecordOutcome::Applied(UpsertOutcome::Updated(current.customer_id.clone()))
                }
            }
        };
        outcomes[i] = Some(outcome);
    }
    decided.outcomes = (0..records.len())
        .map(|i| match follows[i] {
            // A later record of the batch follows the first one's claim.
            Some(first) => RecordOutcome::Duplicate(match &outcomes[first] {
                Some(RecordOutcome::Duplicate(line)) => *line,
                _ => records[first].line,
            }),
            None => outcomes[i].clone().unwrap_or(RecordOutcome::Invalid),
        })
        .collect();
    decided
}

/// Turns a batch's writes into claims alone: what would be created or
/// updated is only claimed, and what would be created has no id yet.
fn dry_run(decided: &mut Decided) {
    for row in decided.inserts.drain(..) {
        decided.claims.push((claim_key(row.customer_ref()), row.line));
    }
    for row in decided.updates.drain(..) {
        let line = row.last_job.map_or(0, |(_, line)| line);
        decided.claims.push((claim_key(&row.customer_ref), line));
    }
    for outcome in &mut decided.outcomes {
        if let RecordOutcome::Applied(UpsertOutcome::Created(id)) = outcome {
            id.clear();
        }
    }
}

/// A new customer for `command`, claimed by `job_id` at `line`.
fn created<'a>(command: &'a CreateCustomer, job_id: &'a str, line: u64) -> NewCustomer<'a> {
    NewCustomer { customer_id: uuid::Uuid::now_v7().to_string(), command, job: job_id, line }
}

/// Addresses replaced; metadata and appdata keys of the row set, others kept.
pub fn merged(current: &StoredCustomer, command: &CreateCustomer) -> StoredCustomer {
    let mut merged = current.clone();
    merged.addresses = command.addresses().to_json();
    for (k, v) in command.metadata().as_map() {
        merged.metadata.insert(k.clone(), v.clone());
    }
    for (k, v) in command.appdata().as_map() {
        merged.appdata.insert(k.clone(), v.clone());
    }
    merged
}

/// Equal as the merchant sees it (normalised values; where it came from aside).
pub fn same_content(a: &StoredCustomer, b: &StoredCustomer) -> bool {
    a.addresses == b.addresses && a.metadata == b.metadata && a.appdata == b.appdata
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Address, AddressKind, Addresses, CustomerRef, JsonObject, PhoneCheck};
    use serde_json::json;

    fn command(r: &str, address: &str, metadata: serde_json::Value) -> CreateCustomer {
        let address = Address::parse(address, AddressKind::Any, None, PhoneCheck::Possible).unwrap();
        let serde_json::Value::Object(metadata) = metadata else { unreachable!() };
        CreateCustomer::new(
            CustomerRef::parse(r).unwrap(),
            Addresses::new(vec![address]).unwrap(),
            JsonObject::metadata(metadata),
            JsonObject::appdata(Default::default()),
        )
    }

    fn record<'a>(line: u64, c: &'a CreateCustomer) -> BatchRecord<'a> {
        BatchRecord { line, claim: Some(c.customer_ref().as_str()), command: Some(c) }
    }

    fn known_with(c: &CreateCustomer) -> Known<'static> {
        let stored = StoredCustomer::of(c, Some(("an-earlier-job".to_owned(), 2)));
        Known { existing: HashMap::from([(stored.customer_ref.clone(), stored)]), ..Known::default() }
    }

    #[test]
    fn a_new_ref_is_created_and_an_identical_one_is_unchanged() {
        let c = command("a", "ann@example.com", json!({"x": "1"}));
        let fresh = decide("j", Scopes::ALL, &[record(2, &c)], &Known::default());
        assert!(matches!(fresh.outcomes[..], [RecordOutcome::Applied(UpsertOutcome::Created(_))]));
        assert_eq!(fresh.inserts.len(), 1);
        let again = decide("j", Scopes::ALL, &[record(2, &c)], &known_with(&c));
        assert!(matches!(again.outcomes[..], [RecordOutcome::Applied(UpsertOutcome::Unchanged(_))]));
        assert!(again.updates.is_empty() && again.inserts.is_empty());
        assert_eq!(again.claims.len(), 1, "an unchanged row still claims its ref");
    }

    #[test]
    fn a_row_inserted_ahead_of_the_rules_is_created_with_its_id_and_not_inserted_again() {
        let c = command("a", "ann@example.com", json!({}));
        let known = Known { inserted: [("a", "id-1".to_owned())].into_iter().collect(), ..Known::default() };
        let decided = decide("j", Scopes::ALL, &[record(2, &c), record(3, &c)], &known);
        assert_eq!(
            decided.outcomes,
            [RecordOutcome::Applied(UpsertOutcome::Created("id-1".into())), RecordOutcome::Duplicate(2)]
        );
        assert!(decided.inserts.is_empty() && decided.claims.is_empty());
    }

    #[test]
    fn an_update_merges_metadata_keys_and_keeps_the_others() {
        let old = command("a", "ann@example.com", json!({"x": "1", "y": "2"}));
        let new = command("a", "+15555001234", json!({"x": "3"}));
        let decided = decide("j", Scopes::ALL, &[record(2, &new)], &known_with(&old));
        assert!(matches!(decided.outcomes[..], [RecordOutcome::Applied(UpsertOutcome::Updated(_))]));
        let row = &decided.updates[0];
        assert_eq!(serde_json::Value::Object(row.metadata.clone()), json!({"x": "3", "y": "2"}));
        assert_eq!(row.addresses, json!([{"type": "phone", "value": "+15555001234"}]));
        assert_eq!(row.last_job, Some(("j".to_owned(), 2)));
    }

    #[test]
    fn a_login_without_update_scope_gets_ref_exists() {
        let c = command("a", "ann@example.com", json!({}));
        let changed = command("a", "bob@example.com", json!({}));
        let decided = decide("j", Scopes::CREATE_ONLY, &[record(2, &changed)], &known_with(&c));
        assert_eq!(decided.outcomes, [RecordOutcome::Applied(UpsertOutcome::RefExists)]);
        assert!(decided.updates.is_empty());
    }

    #[test]
    fn the_first_record_claims_a_ref_valid_or_not_and_later_ones_are_duplicates() {
        let c = command("a", "ann@example.com", json!({}));
        let invalid = BatchRecord { line: 2, claim: Some("a"), command: None };
        let decided = decide("j", Scopes::ALL, &[invalid, record(3, &c), record(4, &c)], &Known::default());
        assert_eq!(
            decided.outcomes,
            [RecordOutcome::Invalid, RecordOutcome::Duplicate(2), RecordOutcome::Duplicate(2)]
        );
        // A claim from an earlier batch of the same job counts too.
        let known = Known { claimed: HashMap::from([("a".to_owned(), 7)]), ..Known::default() };
        assert_eq!(decide("j", Scopes::ALL, &[record(9, &c)], &known).outcomes, [RecordOutcome::Duplicate(7)]);
        // And so does a customer this job created or updated earlier.
        let mut known = known_with(&c);
        known.existing.get_mut("a").unwrap().last_job = Some(("j".to_owned(), 5));
        assert_eq!(decide("j", Scopes::ALL, &[record(9, &c)], &known).outcomes, [RecordOutcome::Duplicate(5)]);
    }

    #[test]
    fn a_key_seen_in_an_earlier_chunk_is_not_copied_blindly_until_the_filter_is_outgrown() {
        let mut hints = Hints::fresh(1_000);
        let keys: Vec<String> = (0..600).map(|i| format!("r-{i:08}")).collect();
        assert!(keys.iter().all(|k| !hints.maybe_seen(k)), "nothing seen yet");
        hints.saw(&keys);
        assert!(keys.iter().all(|k| hints.maybe_seen(k)), "no false negative");
        let unseen = (600..10_600).filter(|i| hints.maybe_seen(&format!("r-{i:08}"))).count();
        assert!(unseen < 300, "about 1 % false positives, not {unseen} in 10,000");
        // More keys than it was sized for: no filter, every row copied at once as before.
        let more: Vec<String> = (600..1_100).map(|i| format!("r-{i:08}")).collect();
        hints.saw(&more);
        assert!(!hints.maybe_seen(&keys[0]));
        // A resumed job has none either.
        assert!(!Hints::default().maybe_seen("r-00000001"));
    }
}
