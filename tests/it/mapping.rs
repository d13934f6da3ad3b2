//! Mapping profiles end to end: each platform preset's real export header
//! with realistic rows through the real daemon and OpenSSH `sftp` (through
//! the delay proxy), the suggestion for a rejected header re-used as is, a
//! dry run with a profile, a job keeping the profile it started with, and
//! the bounds on profiles.

use std::path::Path;
use std::time::Duration;

use crate::on_both_backends;
use crate::support::{describe, eventually, openssh_sftp, read_results, DelayProxy, TestAccount, TestDaemon, TestDb};

const REPORT: Duration = Duration::from_secs(90);

/// A CSV file: `header`, then rows given as (column, value) pairs (others empty).
fn csv_of(header: &str, rows: &[&[(&str, &str)]]) -> String {
    let names: Vec<&str> = header.split(',').collect();
    let mut out = csv::WriterBuilder::new().from_writer(Vec::new());
    out.write_record(&names).unwrap();
    for row in rows {
        let cells: Vec<&str> = names.iter().map(|n| row.iter().find(|(k, _)| k == n).map_or("", |(_, v)| *v)).collect();
        out.write_record(&cells).unwrap();
    }
    String::from_utf8(out.into_inner().unwrap()).unwrap()
}

async fn put_via(d: &TestDaemon, port: &str, local: &Path, remote: &str) {
    let out = openssh_sftp(&d.dir, &d.key, port, "shop", &format!("put {} {remote}\n", local.display())).await;
    assert!(out.status.success(), "upload to {remote} failed: {}", describe(&out));
}

async fn report(d: &TestDaemon, avid: &str, name: &str) -> serde_json::Value {
    let path = d.outbox(avid).join(name);
    let text = eventually(REPORT, name, || std::fs::read_to_string(&path).ok()).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A stored customer's address values, in order, and its metadata.
async fn stored(store: &intake::store::Store, avid: &str, r: &str) -> (Vec<String>, serde_json::Value) {
    let c = store.get_customer(avid, r).await.unwrap().unwrap_or_else(|| panic!("customer {r} stored"));
    let addresses = c.addresses.as_array().unwrap().iter().map(|a| a["value"].as_str().unwrap().to_owned()).collect();
    (addresses, serde_json::Value::Object(c.metadata))
}

const SHOPIFY: &str = "Customer ID,First Name,Last Name,Email,Accepts Email Marketing,Default Address Company,Default Address Address1,Default Address Address2,Default Address City,Default Address Province Code,Default Address Country Code,Default Address Zip,Default Address Phone,Phone,Accepts SMS Marketing,Total Spent,Total Orders,Note,Tax Exempt,Tags";
const STRIPE: &str = "id,Description,Email,Name,Created (UTC),Card ID,Delinquent,Card Last4,Card Brand,Card Funding,Card Exp Month,Card Exp Year,Card Name,Card Address Line1,Card Address Line2,Card Address City,Card Address State,Card Address Country,Card Address Zip,Card Issue Country,Card Fingerprint,Card CVC Status,Card AVS Zip Status,Card AVS Line1 Status,Card Tokenization Method,Plan,Status,Cancel At Period End,Account Balance,Currency,Business Vat ID,Total Spend,Payment Count,Average Order,Refunded Volume,Dispute Losses";
const SQUARE: &str = "Reference ID,First Name,Last Name,Email Address,Phone Number,Nickname,Company Name,Street Address 1,Street Address 2,City,State,Postal Code,Birthday,Memo,Square Customer ID,Creation Source,First Visit,Last Visit,Transaction Count,Lifetime Spend,Email Subscription Status,Instant Profile,Blocked from online booking";
const WOOCOMMERCE: &str =
    "Name,Username,Last active,Date registered,Email,Orders,Total spend,AOV,Country / Region,City,Region,Postal code";
const HUBSPOT: &str = "Record ID,First Name,Last Name,Email,Phone Number,Contact owner,Lifecycle Stage,Lead Status,Marketing contact status,Create Date,Last Activity Date";
const MAILCHIMP: &str = "Email Address,First Name,Last Name,Address,Phone Number,MEMBER_RATING,OPTIN_TIME,OPTIN_IP,CONFIRM_TIME,CONFIRM_IP,LATITUDE,LONGITUDE,GMTOFF,DSTOFF,TIMEZONE,CC,REGION,LAST_CHANGED,LEID,EUID,NOTES,TAGS";

async fn every_presets_real_export_imports_through_openssh_sftp(db: TestDb) {
    let d = TestDaemon::spawn_in_process(&db, &[TestAccount::new("shop")], &[]).await;
    let out = d.cli(&["account", "set", "shop", "--presets", "all"], "").await;
    assert!(out.status.success(), "{}", describe(&out));
    let proxy = DelayProxy::start(d.addr.as_ref().unwrap().parse().unwrap(), Duration::from_millis(10)).await;
    let port = proxy.port.to_string();
    let store = db.store().await;
    let files: Vec<(&str, String)> = vec![
        (
            "shopify",
            csv_of(
                SHOPIFY,
                &[
                    &[
                        ("Customer ID", "'8779761975521"),
                        ("First Name", "Tomotaka"),
                        ("Last Name", "Minoura"),
                        ("Accepts Email Marketing", "no"),
                        ("Default Address Address1", "House no.9, Road no.2, Park road"),
                        ("Default Address City", "Dhaka - North"),
                        ("Default Address Country Code", "BD"),
                        ("Default Address Phone", "'+8801912010701"),
                        ("Phone", "'+8801912010702"),
                        ("Total Spent", "0.00"),
                        ("Total Orders", "3"),
                        ("Tax Exempt", "no"),
                        ("Tags", "VIP Customer"),
                    ],
                    &[
                        ("Customer ID", "'7999252627681"),
                        ("First Name", "Aryan"),
                        ("Email", "aryan@example.com"),
                        ("Default Address Company", "Acme, Inc."),
                        ("Phone", "'+12175550123"),
                        ("Note", "Likes \"quotes\"\nand two lines"),
                        ("Tags", "tag1, tag2"),
                    ],
                    &[("Customer ID", "'5555"), ("First Name", "Excel"), ("Phone", "1.5551234567E+10")],
                    &[("First Name", "Guest"), ("Email", "guest@example.com")],
                ],
            ),
        ),
        (
            "stripe",
            csv_of(
                STRIPE,
                &[
                    &[
                        ("id", "cus_NffrFeUfNV2Hib"),
                        ("Description", "VIP, gold"),
                        ("Email", "jenny.rosen@example.com"),
                        ("Name", "Jenny Rosen"),
                        ("Created (UTC)", "2024-01-02 03:04"),
                        ("Card Last4", "4242"),
                        ("Card Brand", "Visa"),
                        ("Delinquent", "false"),
                        ("Currency", "usd"),
                    ],
                    &[("Email", "guest.buyer@example.com"), ("Name", "Guest Buyer")],
                ],
            ),
        ),
        (
            "square",
            csv_of(
                SQUARE,
                &[
                    &[
                        ("Reference ID", "SQ-1001"),
                        ("First Name", "Ana"),
                        ("Email Address", "ana@example.com"),
                        ("Phone Number", "'+14155550100"),
                        ("Company Name", "Ana's Bakery"),
                        ("Square Customer ID", "ZX9Y8W7V6T5"),
                        ("Memo", "allergic to nuts"),
                        ("Transaction Count", "4"),
                    ],
                    &[("Square Customer ID", "AB1C2D3E4F"), ("Phone Number", "+14155550101")],
                ],
            ),
        ),
        (
            "woocommerce",
            // Re-saved in Excel: its `sep=,` first line.
            format!(
                "sep=,\r\n{}",
                csv_of(
                    WOOCOMMERCE,
                    &[
                        &[
                            ("Name", "Kim Lee"),
                            ("Username", "kimlee"),
                            ("Email", "kim@example.com"),
                            ("Orders", "2"),
                            ("Country / Region", "US"),
                            ("City", "Austin"),
                            ("Postal code", "'78701"),
                        ],
                        &[("Name", "No Email"), ("Username", "noemail")],
                    ],
                )
            ),
        ),
        (
            "hubspot",
            csv_of(
                HUBSPOT,
                &[&[
                    ("Record ID", "51"),
                    ("First Name", "Brian"),
                    ("Last Name", "Halligan"),
                    ("Email", "bh@hubspot.com"),
                    ("Phone Number", "+16175550199"),
                    ("Lifecycle Stage", "Customer"),
                ]],
            ),
        ),
        (
            "mailchimp",
            csv_of(
                MAILCHIMP,
                &[&[
                    ("Email Address", "appleseed_john@example.com"),
                    ("First Name", "John"),
                    ("Last Name", "Appleseed"),
                    ("Address", "1 Infinite Loop  Cupertino CA 95014 US"),
                    ("Phone Number", "'+14085550123"),
                    ("MEMBER_RATING", "2"),
                    ("OPTIN_TIME", "2018-06-12 07:53:28"),
                    ("LEID", "3e4f9b94"),
                ]],
            ),
        ),
    ];
    for (name, text) in &files {
        let local = d.dir.join(format!("{name}_export.csv"));
        std::fs::write(&local, text).unwrap();
        put_via(&d, &port, &local, &format!("/customers/{name}_export.csv")).await;
    }
    for (name, _) in &files {
        let summary = report(&d, "shop", &format!("{name}_export.summary.json")).await;
        assert_eq!(summary["status"], "completed", "{name}: {summary}");
        assert_eq!(summary["mapping"]["name"], *name, "{summary}");
        assert_eq!(summary["mapping"]["preset"], true, "{summary}");
        assert_eq!(summary["mapping"]["sha256"].as_str().unwrap().len(), 64);
        assert!(!summary["ignored_columns"].as_array().unwrap().is_empty(), "{summary}");
    }
    // Shopify: ids without their apostrophe, the default address's phone
    // before the customer's phone (header order), the guest keyed by email.
    let (addresses, metadata) = stored(&store, "shop", "8779761975521").await;
    assert_eq!(addresses, ["+8801912010701", "+8801912010702"]);
    assert_eq!(metadata["first_name"], "Tomotaka");
    assert_eq!(metadata["city"], "Dhaka - North");
    assert_eq!(metadata["source"], "shopify");
    let (addresses, metadata) = stored(&store, "shop", "7999252627681").await;
    assert_eq!(addresses, ["aryan@example.com", "+12175550123"]);
    assert_eq!(metadata["note"], "Likes \"quotes\"\nand two lines");
    assert_eq!(metadata["company"], "Acme, Inc.");
    assert_eq!(stored(&store, "shop", "guest@example.com").await.0, ["guest@example.com"]);
    let shopify = report(&d, "shop", "shopify_export.summary.json").await;
    assert_eq!([&shopify["created"], &shopify["failed"]], [3, 1], "{shopify}");
    let results = read_results(&d.outbox("shop").join("shopify_export.results.csv"));
    let excel = results.iter().find(|r| r[1] == "5555").expect("the E-notation row");
    assert_eq!((excel[4].as_str(), excel[5].as_str()), ("invalid_phone", "phone"), "{excel:?}");
    assert!(excel[6].starts_with("\"phone\" (phone): ") && excel[6].contains("spreadsheet"), "{excel:?}");
    let failed = std::fs::read_to_string(d.outbox("shop").join("shopify_export.failed.csv")).unwrap();
    assert!(failed.starts_with(SHOPIFY), "failed.csv keeps the original header: {failed}");
    // Stripe: a guest customer (no id) is keyed by its email.
    let (addresses, metadata) = stored(&store, "shop", "cus_NffrFeUfNV2Hib").await;
    assert_eq!(addresses, ["jenny.rosen@example.com"]);
    assert_eq!((&metadata["name"], &metadata["description"]), (&"Jenny Rosen".into(), &"VIP, gold".into()));
    assert!(stored(&store, "shop", "guest.buyer@example.com").await.0 == ["guest.buyer@example.com"]);
    // Square: the merchant's reference id, else Square's own.
    let (addresses, metadata) = stored(&store, "shop", "SQ-1001").await;
    assert_eq!(addresses, ["ana@example.com", "+14155550100"]);
    assert_eq!(metadata["square_customer_id"], "ZX9Y8W7V6T5");
    assert_eq!(stored(&store, "shop", "AB1C2D3E4F").await.0, ["+14155550101"]);
    // WooCommerce: the email is the ref; Excel's sep line skipped but counted.
    let (addresses, metadata) = stored(&store, "shop", "kim@example.com").await;
    assert_eq!(addresses, ["kim@example.com"]);
    assert_eq!((&metadata["username"], &metadata["postal_code"]), (&"kimlee".into(), &"78701".into()));
    let woo = read_results(&d.outbox("shop").join("woocommerce_export.results.csv"));
    assert_eq!((woo[1][0].as_str(), woo[2][0].as_str()), ("3", "4"), "line numbers count the sep line: {woo:?}");
    assert_eq!(woo[2][4], "missing_ref", "{woo:?}");
    // HubSpot and Mailchimp.
    let (addresses, metadata) = stored(&store, "shop", "51").await;
    assert_eq!(addresses, ["bh@hubspot.com", "+16175550199"]);
    assert_eq!(metadata["last_name"], "Halligan");
    let (addresses, metadata) = stored(&store, "shop", "appleseed_john@example.com").await;
    assert_eq!(addresses, ["appleseed_john@example.com", "+14085550123"]);
    assert_eq!(metadata["postal_address"], "1 Infinite Loop  Cupertino CA 95014 US");
}

async fn a_rejected_header_gets_a_suggestion_that_works_unchanged(db: TestDb) {
    let d = TestDaemon::spawn_in_process(&db, &[TestAccount::new("shop")], &[]).await;
    let proxy = DelayProxy::start(d.addr.as_ref().unwrap().parse().unwrap(), Duration::from_millis(10)).await;
    let port = proxy.port.to_string();
    let local = d.dir.join("crm-2026-05.csv");
    std::fs::write(
        &local,
        "Customer ID,Email Address,Mobile,Phone Number,First Name\nC-1,ann@example.com,+15555001234,,Ann\n\
         C-2,bob@example.com,,+15555001235,Bob\n",
    )
    .unwrap();
    put_via(&d, &port, &local, "/customers/crm-2026-05.csv").await;
    let summary = report(&d, "shop", "crm-2026-05.summary.json").await;
    assert_eq!(summary["status"], "rejected");
    assert_eq!(summary["error"]["code"], "missing_header", "no column is one of ours: {summary}");
    assert!(summary["error"]["message"].as_str().unwrap().contains("crm-2026-05.mapping-suggestion.toml"), "{summary}");
    assert_eq!(summary["mapping"], serde_json::Value::Null);
    let suggested = d.outbox("shop").join("crm-2026-05.mapping-suggestion.toml");
    let suggestion = std::fs::read_to_string(&suggested).unwrap();
    // Uploaded unchanged into /mappings, as a merchant would.
    put_via(&d, &port, &suggested, "/mappings/crm.toml").await;
    put_via(&d, &port, &local, "/customers/crm-2026-05.csv").await;
    let again = eventually(REPORT, "the second report", || {
        let text = std::fs::read_to_string(d.outbox("shop").join("crm-2026-05.summary.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        (v["job_id"] != summary["job_id"]).then_some(v)
    })
    .await;
    assert_eq!(again["status"], "completed", "{again}\n{suggestion}");
    assert_eq!([&again["created"], &again["failed"]], [2, 0], "{again}");
    assert_eq!(again["mapping"]["name"], "crm");
    assert!(!d.outbox("shop").join("crm-2026-05.mapping-suggestion.toml").exists(), "an old suggestion goes");
    let store = db.store().await;
    let (addresses, metadata) = stored(&store, "shop", "C-2").await;
    assert_eq!(addresses, ["bob@example.com", "+15555001235"]);
    assert_eq!(metadata["first_name"], "Bob");
}

async fn a_dry_run_with_a_profile_predicts_the_import(db: TestDb) {
    let d = TestDaemon::spawn_in_process(&db, &[TestAccount::new("shop")], &[]).await;
    let profile = "[columns]\n\"Customer ID\" = \"ref\"\n\"E-mail\" = \"email\"\n\"Cell\" = \"phone\"\n\
                   \"First Name\" = \"metadata.firstName\"\n[fallback]\nref = [\"E-mail\"]\n";
    let out = d.cli(&["mapping", "set", "shop", "mine", "--file", "-"], profile).await;
    assert!(out.status.success(), "{}", describe(&out));
    let local = d.dir.join("x.csv");
    std::fs::write(
        &local,
        "Customer ID,E-mail,Cell,First Name\nc1,a@example.com,,Ann\n,b@example.com,+15555001234,Bob\nc3,nope,,Cy\n",
    )
    .unwrap();
    let port = d.port();
    put_via(&d, &port, &local, "/validate/x.csv").await;
    let dry = report(&d, "shop", "x.validation.json").await;
    assert_eq!(dry["mapping"]["name"], "mine", "{dry}");
    let store = db.store().await;
    assert_eq!(store.count_customers("shop").await.unwrap(), 0, "a dry run writes nothing");
    put_via(&d, &port, &local, "/customers/x.csv").await;
    let real = report(&d, "shop", "x.summary.json").await;
    for key in ["created", "updated", "unchanged", "failed", "rows", "errors_by_code", "mapping", "ignored_columns"] {
        assert_eq!(dry[key], real[key], "{key}");
    }
    let predicted = read_results(&d.outbox("shop").join("x.validation.csv"));
    let results = read_results(&d.outbox("shop").join("x.results.csv"));
    for (p, r) in predicted.iter().zip(&results).skip(1) {
        assert_eq!((&p[0], &p[1], &p[2], &p[4], &p[5], &p[6]), (&r[0], &r[1], &r[2], &r[4], &r[5], &r[6]));
    }
    assert_eq!(results[3][5], "e-mail", "error_field is the merchant's column: {results:?}");
    assert!(results[3][6].starts_with("\"e-mail\" (email): "), "{results:?}");
    assert_eq!(stored(&store, "shop", "b@example.com").await.1["firstName"], "Bob", "the key keeps its case");
}

async fn a_job_keeps_the_profile_it_started_with(db: TestDb) {
    let d = TestDaemon::spawn_in_process(&db, &[TestAccount::new("shop")], &[("INTAKE_BATCH_SIZE", "500")]).await;
    let v1 = "files = \"big*.csv\"\n[columns]\n\"Id\" = \"ref\"\n\"Mail\" = \"email\"\n[constants]\n\"metadata.v\" = \"1\"\n";
    let out = d.cli(&["mapping", "set", "shop", "big", "--file", "-"], v1).await;
    assert!(out.status.success(), "{}", describe(&out));
    let local = d.dir.join("big.csv");
    let mut text = String::from("Id,Mail\n");
    for i in 0..60_000 {
        text += &format!("r{i},r{i}@example.com\n");
    }
    std::fs::write(&local, text).unwrap();
    put_via(&d, &d.port(), &local, "/customers/big.csv").await;
    let progress = d.outbox("shop").join("big.progress.json");
    eventually(REPORT, "the job to run", || {
        let text = std::fs::read_to_string(&progress).ok()?;
        text.contains("\"running\"").then_some(())
    })
    .await;
    let store = db.store().await;
    let v2 = v1.replace("\"1\"", "\"2\"");
    let out = d.cli(&["mapping", "set", "shop", "big", "--file", "-"], &v2).await;
    assert!(out.status.success(), "{}", describe(&out));
    let changed_while_running = !d.outbox("shop").join("big.summary.json").exists();
    let summary = report(&d, "shop", "big.summary.json").await;
    assert_eq!(summary["status"], "completed", "{summary}");
    use sha2::Digest;
    assert_eq!(summary["mapping"]["sha256"], hex::encode(sha2::Sha256::digest(v1.as_bytes())));
    for r in ["r0", "r59999"] {
        assert_eq!(stored(&store, "shop", r).await.1["v"], "1", "{r}");
    }
    assert!(changed_while_running, "the profile changed before the job ended (else this proves nothing)");
    // Removed now: the next upload is read as it is (and rejected).
    let out = d.cli(&["mapping", "rm", "shop", "big"], "").await;
    assert!(out.status.success(), "{}", describe(&out));
    let small = d.dir.join("big2.csv");
    std::fs::write(&small, "Id,Mail\nx,x@example.com\n").unwrap();
    put_via(&d, &d.port(), &small, "/customers/big2.csv").await;
    assert_eq!(report(&d, "shop", "big2.summary.json").await["error"]["code"], "missing_header");
}

async fn profiles_are_bounded_in_size_entries_depth_and_count(db: TestDb) {
    let d = TestDaemon::spawn_in_process(&db, &[TestAccount::new("shop")], &[]).await;
    let set = |text: String| {
        let d = &d;
        async move { d.cli(&["mapping", "set", "shop", "p", "--file", "-"], &text).await }
    };
    let huge = d.dir.join("huge.toml");
    std::fs::write(&huge, format!("# {}\n", "x".repeat(1024 * 1024))).unwrap();
    let out = d.cli(&["mapping", "set", "shop", "p", "--file", huge.to_str().unwrap()], "").await;
    assert!(!out.status.success() && describe(&out).contains("limit"), "{}", describe(&out));
    let mut many = String::from("ignore = [");
    for i in 0..10_000 {
        many += &format!("\"c{i}\",");
    }
    many += "]\n";
    let out = set(many).await;
    assert!(!out.status.success() && describe(&out).contains("entries"), "{}", describe(&out));
    let deep = format!("x = {}1{}\n", "[".repeat(20_000), "]".repeat(20_000));
    let out = set(deep).await;
    assert!(!out.status.success(), "{}", describe(&out));
    let out = set("[columns]\n\"Mobile\" = \"telephone\"\n".into()).await;
    assert!(describe(&out).contains("line 2, key `Mobile`"), "{}", describe(&out));
    let bad_utf8 = d.dir.join("bad.toml");
    std::fs::write(&bad_utf8, b"[columns]\n\"Caf\xe9\" = \"email\"\n").unwrap();
    let out = d.cli(&["mapping", "set", "shop", "p", "--file", bad_utf8.to_str().unwrap()], "").await;
    assert!(!out.status.success() && describe(&out).contains("line 2"), "{}", describe(&out));
    let out = d.cli(&["mapping", "set", "shop", "bad/name", "--file", "-"], "").await;
    assert!(!out.status.success() && describe(&out).contains("mapping name"), "{}", describe(&out));
    // 10,000 profiles in a loop: the account keeps at most the limit.
    let store = db.store().await;
    let text = "[columns]\n\"Id\" = \"ref\"\n";
    let mut refused = 0;
    for i in 0..10_000 {
        let done = store.put_mapping("shop", &format!("m{i:05}"), text, "x", 100).await.unwrap();
        refused += usize::from(done == intake::store::PutMapping::TooMany);
    }
    assert_eq!(store.list_mappings("shop").await.unwrap().len(), 100);
    assert_eq!(refused, 9_900);
    let out = d.cli(&["mapping", "set", "shop", "one-more", "--file", "-"], text).await;
    assert!(!out.status.success() && describe(&out).contains("limit"), "{}", describe(&out));
    let out = d.cli(&["mapping", "set", "shop", "m00001", "--file", "-"], text).await;
    assert!(out.status.success(), "replacing one is allowed: {}", describe(&out));
}

async fn metadata_is_stored_without_silent_change(db: TestDb) {
    let d = TestDaemon::spawn_in_process(&db, &[TestAccount::new("shop")], &[]).await;
    let local = d.dir.join("meta.csv");
    std::fs::write(
        &local,
        "ref,email,metadata,metadata.firstName\n\
         m1,m1@example.com,\"{\"\"id\"\":123456789012345678901,\"\"price\"\":0.10,\"\"a.b\"\":1}\",Ann\n\
         m2,m2@example.com,\"{\"\"tier\"\":\"\"gold\"\",\"\"tier\"\":\"\"silver\"\"}\",Bob\n",
    )
    .unwrap();
    put_via(&d, &d.port(), &local, "/customers/meta.csv").await;
    let summary = report(&d, "shop", "meta.summary.json").await;
    assert_eq!([&summary["created"], &summary["failed"]], [1, 1], "{summary}");
    let results = read_results(&d.outbox("shop").join("meta.results.csv"));
    assert_eq!((results[2][4].as_str(), results[2][5].as_str()), ("invalid_metadata", "metadata"), "{results:?}");
    let store = db.store().await;
    let metadata = stored(&store, "shop", "m1").await.1;
    assert_eq!(serde_json::to_string(&metadata["id"]).unwrap(), "123456789012345678901", "digits kept");
    assert_eq!(serde_json::to_string(&metadata["price"]).unwrap(), "0.10");
    assert_eq!(metadata["firstName"], "Ann", "the key keeps its case");
    assert_eq!(metadata["a.b"], 1, "a dotted key inside the object is that key");
}

/// Uploads `text` to `path` with a raw SFTP session and returns the
/// message of the failure status its CLOSE gets.
/// A raw SFTP session as `shop` (with its connection, which must outlive it).
async fn raw_session(d: &TestDaemon) -> (impl Drop, russh_sftp::client::RawSftpSession) {
    let key = russh::keys::load_secret_key(&d.key, None).unwrap();
    let addr: std::net::SocketAddr = d.addr.as_ref().unwrap().parse().unwrap();
    let conn = crate::sftp::login_key(addr, "shop", &key).await.unwrap();
    let channel = conn.channel_open_session().await.unwrap();
    channel.request_subsystem(true, "sftp").await.unwrap();
    let raw = russh_sftp::client::RawSftpSession::new(channel.into_stream());
    raw.init().await.unwrap();
    (conn, raw)
}

const WRITE: fn() -> russh_sftp::protocol::OpenFlags = || {
    use russh_sftp::protocol::OpenFlags;
    OpenFlags::CREATE | OpenFlags::WRITE | OpenFlags::TRUNCATE
};

async fn close_message(d: &TestDaemon, path: &str, text: &[u8]) -> String {
    use russh_sftp::protocol::FileAttributes;
    let (_conn, raw) = raw_session(d).await;
    let handle = raw.open(path, WRITE(), FileAttributes::default()).await.unwrap().handle;
    raw.write(handle.clone(), 0, text.to_vec()).await.unwrap();
    match raw.close(handle).await {
        Err(russh_sftp::client::error::Error::Status(s)) => s.error_message,
        other => panic!("the close was not refused: {other:?}"),
    }
}

async fn the_mappings_folder_over_openssh_sftp(db: TestDb) {
    let d = TestDaemon::spawn_in_process(&db, &[TestAccount::new("shop")], &[]).await;
    let proxy = DelayProxy::start(d.addr.as_ref().unwrap().parse().unwrap(), Duration::from_millis(10)).await;
    let port = proxy.port.to_string();
    let sftp = |batch: String| {
        let (d, port) = (&d, &port);
        async move { openssh_sftp(&d.dir, &d.key, port, "shop", &batch).await }
    };
    let good = d.dir.join("good.toml");
    std::fs::write(&good, "[columns]\n\"Id\" = \"ref\"\n\"Mail\" = \"email\"\n").unwrap();
    let bad = d.dir.join("bad.toml");
    std::fs::write(&bad, "[columns]\n\"Mobile\" = \"telephone\"\n").unwrap();
    let out = sftp(format!("put {} /mappings/crm.toml\nls -l /mappings\nls /\n", good.display())).await;
    let shown = describe(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("crm.toml") && shown.contains("mappings"), "listed: {shown}");
    let out = sftp(format!("put {} /mappings/broken.toml\n", bad.display())).await;
    let shown = describe(&out);
    assert!(!out.status.success() && shown.contains("close remote: Failure"), "refused at close: {shown}");
    // OpenSSH prints the status code only; the status's message names the
    // line and the key (what WinSCP, FileZilla, lftp show).
    let message = close_message(&d, "/mappings/broken.toml", &std::fs::read(&bad).unwrap()).await;
    assert!(message.contains("line 2, key `Mobile`") && message.contains("unknown target"), "{message}");
    let message = close_message(&d, "/mappings/utf.toml", b"[columns]\n\"Caf\xe9\" = \"email\"\n").await;
    assert!(message.contains("line 2") && message.contains("UTF-8"), "{message}");
    let long = "n".repeat(65);
    for name in ["bad name.toml", "x.txt", long.as_str()] {
        let out = sftp(format!("put {} \"/mappings/{name}\"\n", good.display())).await;
        assert!(!out.status.success(), "{name}: {}", describe(&out));
    }
    let (_conn, raw) = raw_session(&d).await;
    for name in ["a\u{7}b.toml", "a\nb.toml", ".hidden.toml", "x/y.toml"] {
        let opened = raw.open(format!("/mappings/{name}"), WRITE(), Default::default()).await;
        match opened {
            Err(russh_sftp::client::error::Error::Status(s)) => {
                assert!(
                    s.error_message.contains("NAME.toml") || s.status_code != russh_sftp::protocol::StatusCode::Ok,
                    "{name:?}: {s:?}"
                )
            }
            other => panic!("{name:?} was not refused: {other:?}"),
        }
    }
    let back = d.dir.join("back.toml");
    let out = sftp(format!("get /mappings/crm.toml {}\n", back.display())).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&good).unwrap());
    let store = db.store().await;
    let names: Vec<String> = store.list_mappings("shop").await.unwrap().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["crm"], "only the valid one is stored");
    // Live for the next upload.
    let file = d.dir.join("list.csv");
    std::fs::write(&file, "Id,Mail\nz1,z1@example.com\n").unwrap();
    put_via(&d, &port, &file, "/customers/list.csv").await;
    assert_eq!(report(&d, "shop", "list.summary.json").await["mapping"]["name"], "crm");
    let out = sftp("rm /mappings/crm.toml\nls /mappings\n".into()).await;
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && !listed.lines().any(|l| !l.starts_with("sftp>") && l.contains("crm.toml")),
        "{listed}"
    );
    assert!(store.list_mappings("shop").await.unwrap().is_empty());
}

#[tokio::test]
async fn check_applies_a_profile_offline() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("crm.toml");
    std::fs::write(&profile, "[columns]\n\"Customer ID\" = \"ref\"\n\"Mobile\" = \"phone\"\nignore = []\n").unwrap();
    let file = dir.path().join("crm.csv");
    std::fs::write(&file, "sep=;\nCustomer ID;Mobile\nc1;+15555001234\nc2;1.5555001234E+10\n").unwrap();
    let (p, f) = (profile.to_str().unwrap(), file.to_str().unwrap());
    let out = crate::support::intake(&["check", "--mapping", p, f], &[], dir.path()).await;
    let shown = describe(&out);
    assert!(!out.status.success(), "`ignore` inside [columns] is no target: {shown}");
    assert!(shown.contains("line 4, key `ignore`"), "{shown}");
    std::fs::write(&profile, "[columns]\n\"Customer ID\" = \"ref\"\n\"Mobile\" = \"phone\"\n").unwrap();
    let out = crate::support::intake(&["check", "--mapping", p, f], &[], dir.path()).await;
    let shown = describe(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(shown.contains("mapping crm (sha256 "), "{shown}");
    assert!(shown.contains("line 4: invalid_phone [mobile]") && shown.contains("spreadsheet"), "{shown}");
    let out = crate::support::intake(&["check", f], &[], dir.path()).await;
    assert_eq!(out.status.code(), Some(2), "without the profile the header is not ours: {}", describe(&out));
}

on_both_backends!(
    the_mappings_folder_over_openssh_sftp,
    metadata_is_stored_without_silent_change,
    every_presets_real_export_imports_through_openssh_sftp,
    a_rejected_header_gets_a_suggestion_that_works_unchanged,
    a_dry_run_with_a_profile_predicts_the_import,
    a_job_keeps_the_profile_it_started_with,
    profiles_are_bounded_in_size_entries_depth_and_count,
);
