use super::*;
use proptest::prelude::*;

fn profile(text: &str) -> Result<Profile, ProfileError> {
    Profile::parse("p", text.as_bytes())
}

fn header(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

const EXAMPLE: &str = r#"files = "customers_export*.csv"
default_region = "US"
ignore = ["Accepts Email Marketing", "Total Spent"]

[columns]
"Customer ID" = "ref"
"Email" = "email"
"Phone" = "phone"
"Default Address Phone" = "address_2"
"First Name" = "metadata.first_name"

[constants]
"metadata.source" = "shopify"

[fallback]
ref = ["Email"]
"#;

#[test]
fn the_documented_example_is_a_valid_profile() {
    let p = profile(EXAMPLE).unwrap();
    assert!(p.matches_file("customers_export.csv"));
    assert!(p.matches_file("Customers_Export-2.CSV"), "the glob is case-insensitive");
    assert!(!p.matches_file("other.csv"));
    assert_eq!(p.default_region.map(|r| r.code()), Some("US".to_owned()));
    assert!(p.strip_apostrophe);
    assert_eq!(p.sha256().len(), 64);
}

#[test]
fn refusals_name_the_line_and_the_key() {
    let cases: &[(&str, usize, &str, &str)] = &[
        ("[columns]\n\"Mobile\" = \"telephone\"\n", 2, "Mobile", "unknown target"),
        ("[columns]\n\"Email\" = \"email\"\n\"E-mail\" = \"email\"\n", 3, "E-mail", "already mapped from `Email`"),
        ("[constants]\nref = \"x\"\n", 2, "ref", "constant cannot be the ref"),
        ("files = \"[abc\"\n", 1, "files", "invalid glob"),
        ("\n\ndefault_region = \"Narnia\"\n", 3, "default_region", "region"),
        ("[columns]\n\"A\" = \"ref\"\n\"a \" = \"email\"\n", 3, "a ", "same column"),
    ];
    for (text, line, key, what) in cases {
        let e = profile(text).unwrap_err();
        assert_eq!(e.line, Some(*line), "{text}: {e}");
        assert!(e.to_string().contains(&format!("key `{key}`")) || e.key == *key, "{text}: {e}");
        assert!(e.message.contains(what), "{text}: {e}");
    }
}

#[test]
fn an_unknown_key_or_a_syntax_error_names_its_line() {
    let e = profile("files = \"x\"\n\nfallbacks = 1\n").unwrap_err();
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.message.contains("fallbacks"), "{e}");
    let e = profile("[columns]\n\"A\" = \n").unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
}

#[test]
fn invalid_utf8_is_refused_with_its_line() {
    let e = Profile::parse("p", b"files = \"a\"\n# caf\xe9\n").unwrap_err();
    assert_eq!(e.line, Some(2));
    assert!(e.message.contains("UTF-8"));
}

#[test]
fn a_profile_over_the_size_limit_is_refused_before_it_is_parsed() {
    let big = format!("# {}\n", "x".repeat(MAX_PROFILE_BYTES));
    assert!(profile(&big).unwrap_err().message.contains("limit"));
    let mut many = String::from("[columns]\n");
    for i in 0..10_000 {
        many.push_str(&format!("\"c{i}\" = \"metadata.k{i}\"\n"));
    }
    // Over the byte limit already; the entry limit holds for a compact one too.
    assert!(profile(&many).is_err());
    let mut ignore = String::from("ignore = [");
    for i in 0..(MAX_ENTRIES + 1) {
        ignore.push_str(&format!("\"{i}\","));
    }
    ignore.push_str("]\n");
    assert!(ignore.len() < MAX_PROFILE_BYTES);
    assert!(profile(&ignore).unwrap_err().message.contains("entries"), "the entry limit");
}

#[test]
fn deep_toml_is_an_error_not_a_crash() {
    let deep = format!("x = {}1{}\n", "[".repeat(50_000), "]".repeat(50_000));
    assert!(profile(&deep[..MAX_PROFILE_BYTES.min(deep.len())]).is_err());
    let tables = format!("a = {}\n", "{ b = ".repeat(10_000) + "1" + &" }".repeat(10_000));
    assert!(profile(&tables).is_err());
}

#[test]
fn a_name_is_1_to_64_safe_characters() {
    for ok in ["shopify", "a", "my-export_2.v1", &"a".repeat(64)] {
        assert!(check_name(ok).is_ok(), "{ok}");
    }
    for bad in ["", ".hidden", "a/b", "a b", "é", "a\u{7}", &"a".repeat(65)] {
        assert!(check_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_metadata_key_keeps_its_case_and_the_prefix_does_not() {
    assert_eq!(canonical_target("Metadata.firstName").as_deref(), Some("metadata.firstName"));
    assert_eq!(canonical_target(" EMAIL ").as_deref(), Some("email"));
    assert_eq!(canonical_target("address_11"), None);
    assert_eq!(canonical_target("metadata..x"), None);
}

#[test]
fn applying_keeps_the_merchants_header_order_and_lists_ignored_columns() {
    let p = Arc::new(profile(EXAMPLE).unwrap());
    let h = header(&["Total Spent", "Phone", "Email", "Customer ID", "Default Address Phone", "First Name"]);
    let mapped = p.apply(&h).unwrap();
    let targets: Vec<&str> = mapped.columns.iter().map(|c| c.target.as_str()).collect();
    assert_eq!(targets, ["phone", "email", "ref", "address_2", "metadata.first_name", "metadata.source"]);
    assert_eq!(mapped.ignored, ["Total Spent"]);
    let Feed::Cell { index, fallbacks } = &mapped.columns[2].feed else { panic!() };
    assert_eq!((*index, fallbacks.as_slice()), (Some(3), &[2usize][..]));
    assert_eq!(mapped.field_name(&mapped.columns[0]), "phone");
}

#[test]
fn a_header_with_a_column_the_profile_does_not_know_is_not_explained() {
    let p = Arc::new(profile(EXAMPLE).unwrap());
    let e = p.apply(&header(&["Customer ID", "Email", "Surprise"])).unwrap_err();
    assert!(e.contains("`surprise`"), "{e}");
    let e = p.apply(&header(&["First Name"])).unwrap_err();
    assert!(e.contains("`ref`"), "{e}");
}

#[test]
fn one_source_may_feed_several_targets() {
    let p = Arc::new(profile("[columns]\n\"Email\" = [\"ref\", \"email\"]\n").unwrap());
    let mapped = p.apply(&header(&["Email"])).unwrap();
    assert_eq!(mapped.columns.len(), 2);
}

#[test]
fn selection_prefers_the_glob_then_the_vocabulary_then_the_first_that_explains() {
    let a = Arc::new(Profile::parse("a", b"[columns]\n\"Id\" = \"ref\"\n\"Mail\" = \"email\"\n").unwrap());
    let b = Arc::new(
        Profile::parse("b", b"[columns]\n\"Id\" = \"ref\"\n\"Mail\" = \"email\"\n\"X\" = \"metadata.x\"\n").unwrap(),
    );
    let globbed = Arc::new(Profile::parse("g", b"files = \"special*.csv\"\n[columns]\n\"Id\" = \"ref\"\n").unwrap());
    let all = vec![a.clone(), b.clone(), globbed.clone()];
    let theirs = header(&["Id", "Mail"]);
    let Selection::Mapped(m) = select(&all, "x.csv", &theirs, false) else { panic!() };
    assert_eq!(m.profile.name, "a", "both explain it: the first wins");
    let Selection::Mapped(m) = select(&all, "x.csv", &header(&["Id", "Mail", "X"]), false) else { panic!() };
    assert_eq!(m.profile.name, "b");
    assert_eq!(select(&all, "x.csv", &header(&["ref", "email"]), true), Selection::Plain);
    let Selection::Refused(why) = select(&all, "special-1.csv", &theirs, false) else { panic!() };
    assert!(why.contains("`mail`") && why.contains("glob"), "{why}");
    assert_eq!(select(&all, "x.csv", &header(&["Nothing"]), false), Selection::Plain);
}

#[test]
fn a_glob_that_matches_everything_takes_every_file() {
    let star = Arc::new(
        Profile::parse("star", b"files = \"*\"\n[columns]\n\"Id\" = \"ref\"\n\"Mail\" = \"email\"\n").unwrap(),
    );
    assert!(star.matches_file("anything.csv"));
    assert!(matches!(select(&[star], "ours.csv", &header(&["ref", "email"]), true), Selection::Refused(_)));
}

#[test]
fn every_preset_is_valid_and_parse_list_keeps_the_documented_order() {
    for name in presets::NAMES {
        let p = presets::get(name).unwrap();
        assert!(p.preset);
    }
    assert_eq!(presets::parse_list("stripe, SHOPIFY").unwrap(), ["shopify", "stripe"]);
    assert_eq!(presets::parse_list("all").unwrap().len(), 6);
    assert!(presets::parse_list("none").unwrap().is_empty());
    assert!(presets::parse_list("shopify,magento").unwrap_err().contains("magento"));
}

#[test]
fn each_preset_explains_its_platforms_export_header() {
    let headers: &[(&str, &str)] = &[
        ("shopify", "Customer ID,First Name,Last Name,Email,Accepts Email Marketing,Default Address Company,Default Address Address1,Default Address Address2,Default Address City,Default Address Province Code,Default Address Country Code,Default Address Zip,Default Address Phone,Phone,Accepts SMS Marketing,Total Spent,Total Orders,Note,Tax Exempt,Tags"),
        ("shopify", "First Name,Last Name,Email,Company,Address1,Address2,City,Province,Province Code,Country,Country Code,Zip,Phone,Accepts Marketing,Total Spent,Total Orders,Tags,Note,Tax Exempt"),
        ("stripe", "id,Description,Email,Name,Created (UTC),Card ID,Delinquent,Card Last4,Card Brand,Card Funding,Card Exp Month,Card Exp Year,Card Name,Card Address Line1,Card Address Line2,Card Address City,Card Address State,Card Address Country,Card Address Zip,Card Issue Country,Card Fingerprint,Card CVC Status,Card AVS Zip Status,Card AVS Line1 Status,Card Tokenization Method,Plan,Status,Cancel At Period End,Account Balance,Currency,Business Vat ID,Total Spend,Payment Count,Average Order,Refunded Volume,Dispute Losses"),
        ("square", "Reference ID,First Name,Last Name,Email Address,Phone Number,Nickname,Company Name,Street Address 1,Street Address 2,City,State,Postal Code,Birthday,Memo,Square Customer ID,Creation Source,First Visit,Last Visit,Transaction Count,Lifetime Spend,Email Subscription Status,Instant Profile,Blocked from online booking"),
        ("woocommerce", "Name,Username,Last active,Date registered,Email,Orders,Total spend,AOV,Country / Region,City,Region,Postal code"),
        ("hubspot", "Record ID,First Name,Last Name,Email,Phone Number,Contact owner,Lifecycle Stage,Lead Status,Marketing contact status,Create Date,Last Activity Date"),
        ("mailchimp", "Email Address,First Name,Last Name,Address,Phone Number,MEMBER_RATING,OPTIN_TIME,OPTIN_IP,CONFIRM_TIME,CONFIRM_IP,LATITUDE,LONGITUDE,GMTOFF,DSTOFF,TIMEZONE,CC,REGION,LAST_CHANGED,LEID,EUID,NOTES,TAGS"),
    ];
    for (name, line) in headers {
        let h: Vec<String> = line.split(',').map(str::to_owned).collect();
        let p = presets::get(name).unwrap();
        let mapped = p.apply(&h).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(mapped.columns.iter().any(|c| c.target == "ref"), "{name}");
        // And it is the one chosen among all presets, in their order.
        let all: Vec<_> = presets::NAMES.iter().map(|n| presets::get(n).unwrap()).collect();
        let Selection::Mapped(m) = select(&all, "export.csv", &h, false) else { panic!("{name}") };
        assert_eq!(m.profile.name, *name);
    }
}

#[test]
fn a_suggestion_for_synonym_names_is_valid_and_explains_its_header() {
    let h = header(&["Customer ID", "Email Address", "Mobile", "Phone Number", "First Name", "First-Name", ""]);
    let text = suggest::suggest(&h, "export-2026-05-01.csv");
    let p = Arc::new(Profile::parse("s", text.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{text}")));
    assert!(p.matches_file("export-2026-05-01.csv"));
    assert!(p.matches_file("export-2026-06-01.csv"));
    let named: Vec<String> = h.iter().filter(|n| !n.is_empty()).cloned().collect();
    let mapped = p.apply(&named).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let targets: Vec<&str> = mapped.columns.iter().map(|c| c.target.as_str()).collect();
    assert_eq!(targets, ["ref", "email", "phone", "address_1", "metadata.first_name", "metadata.first_name_2"]);
    assert!(text.contains("# an id column"), "{text}");
}

#[test]
fn a_suggestion_without_an_id_column_uses_the_email_as_the_ref() {
    let h = header(&["E-mail", "Name"]);
    let text = suggest::suggest(&h, "list.csv");
    let p = Arc::new(Profile::parse("s", text.as_bytes()).unwrap());
    assert!(p.apply(&h).is_ok(), "{text}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn parsing_never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Profile::parse("p", &bytes);
    }

    #[test]
    fn parsing_never_panics_on_toml_like_text(text in "[\\[\\]\"=a-zA-Z._ \n,{}#'-]{0,300}") {
        let _ = Profile::parse("p", text.as_bytes());
    }

    #[test]
    fn a_suggestion_is_always_a_valid_profile(names in proptest::collection::vec("[ -~]{0,20}", 1..20), file in "[a-zA-Z0-9_.*?\\[-]{1,30}") {
        let text = suggest::suggest(&names, &file);
        let parsed = Profile::parse("s", text.as_bytes());
        prop_assert!(parsed.is_ok(), "{:?}\n{}", parsed.err(), text);
    }

    #[test]
    fn selection_is_deterministic_and_takes_the_first_profile_that_explains(
        order in Just(()).prop_perturb(|_, mut rng| { let mut v: Vec<usize> = (0..4).collect(); for i in (1..4).rev() { v.swap(i, (rng.next_u32() as usize) % (i + 1)); } v })
    ) {
        let texts = [
            "[columns]\n\"Id\" = \"ref\"\n\"Mail\" = \"email\"\n",
            "[columns]\n\"Id\" = \"ref\"\n\"Mail\" = \"email\"\nignore = []\n",
            "[columns]\n\"Id\" = \"ref\"\n",
            "[columns]\n\"Mail\" = [\"ref\", \"email\"]\nignore = [\"Id\"]\n",
        ];
        let profiles: Vec<Arc<Profile>> = order.iter().filter_map(|&i| Profile::parse(&format!("p{i}"), texts[i].as_bytes()).ok().map(Arc::new)).collect();
        let h = header(&["Id", "Mail"]);
        let first = select(&profiles, "f.csv", &h, false);
        prop_assert_eq!(&first, &select(&profiles, "f.csv", &h, false));
        let expected = profiles.iter().find(|p| p.apply(&h).is_ok()).map(|p| p.name.clone());
        let got = match first { Selection::Mapped(m) => Some(m.profile.name.clone()), _ => None };
        prop_assert_eq!(got, expected);
    }
}
