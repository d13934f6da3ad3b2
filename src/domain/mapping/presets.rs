//! The built-in profiles for the customer exports merchants already have.
//! Each one explains the platform's export header as the platform writes it
//! (the source of each header is cited beside it); columns that carry no
//! customer data are ignored on purpose, so the summary lists them.

use super::Profile;
use std::sync::{Arc, OnceLock};

/// The presets' names, in the order an account's enabled presets are tried.
pub const NAMES: [&str; 6] = ["shopify", "stripe", "square", "woocommerce", "hubspot", "mailchimp"];

/// Shopify admin, Customers > Export (`customers_export.csv`). The columns
/// are those Shopify documents for its customer CSV
/// (https://help.shopify.com/en/manual/customers/import-export-customers),
/// as current exports write them (`Customer ID` first) and as older ones did
/// (no id column, `Company`, `Address1`, ...). Shopify writes ids and phones
/// with a leading `'` so that spreadsheets keep them as text.
const SHOPIFY: &str = r#"# Shopify customers export (customers_export.csv)
# Source: https://help.shopify.com/en/manual/customers/import-export-customers
ignore = [
  "Accepts Email Marketing", "Accepts SMS Marketing", "Accepts Marketing",
  "Default Address Address1", "Default Address Address2",
  "Default Address Province Code", "Default Address Zip",
  "Address1", "Address2", "Province", "Province Code", "Country", "Zip",
  "Total Spent", "Total Orders", "Tax Exempt",
]

[columns]
"Customer ID" = "ref"
"Email" = "email"
"Phone" = "phone"
"Default Address Phone" = "address_1"
"First Name" = "metadata.first_name"
"Last Name" = "metadata.last_name"
"Default Address Company" = "metadata.company"
"Company" = "metadata.company_name"
"Default Address City" = "metadata.city"
"City" = "metadata.city_name"
"Default Address Country Code" = "metadata.country_code"
"Country Code" = "metadata.country"
"Note" = "metadata.note"
"Tags" = "metadata.tags"

[constants]
"metadata.source" = "shopify"

[fallback]
ref = ["Email", "Phone"]
"#;

/// Stripe Dashboard, Customers > Export (`unified_customers.csv`): the
/// column names as Stripe writes them (`id`, `Created (UTC)`, the `Card ...`
/// columns), read from public code that parses this export, e.g. the
/// importers listed beside Stripe's export formats
/// (https://docs.stripe.com/get-started/data-migrations/export-file-formats).
/// A guest customer has no `id`: its email is the ref.
const STRIPE: &str = r#"# Stripe customers export (unified_customers.csv)
# Source: Stripe Dashboard > Customers > Export; https://docs.stripe.com/get-started/data-migrations/export-file-formats
ignore = [
  "Card ID", "Card Last4", "Card Brand", "Card Funding", "Card Exp Month", "Card Exp Year", "Card Name",
  "Card Address Line1", "Card Address Line2", "Card Address City", "Card Address State",
  "Card Address Country", "Card Address Zip", "Card Issue Country", "Card Fingerprint",
  "Card CVC Status", "Card AVS Zip Status", "Card AVS Line1 Status", "Card Tokenization Method",
  "Delinquent", "Plan", "Status", "Cancel At Period End", "Account Balance", "Currency",
  "Business Vat ID", "Total Spend", "Payment Count", "Average Order", "Refunded Volume", "Dispute Losses",
]

[columns]
"id" = "ref"
"Email" = "email"
"Phone" = "phone"
"Name" = "metadata.name"
"Description" = "metadata.description"
"Created (UTC)" = "metadata.created"

[constants]
"metadata.source" = "stripe"

[fallback]
ref = ["Email"]
"#;

/// Square Dashboard, Customers > Directory > Export customers: the header
/// Square writes (`Reference ID`, `Email Address`, `Phone Number`,
/// `Square Customer ID`, ...), see
/// https://squareup.com/help/au/en/article/5498-manage-your-customer-directory-online
/// and public code that parses this export. `Reference ID` is the
/// merchant's own id; Square's id is the fallback.
const SQUARE: &str = r#"# Square customer directory export
# Source: https://squareup.com/help/au/en/article/5498-manage-your-customer-directory-online
ignore = [
  "Nickname", "Street Address 1", "Street Address 2", "State", "Postal Code", "Birthday",
  "Creation Source", "First Visit", "Last Visit", "Transaction Count", "Lifetime Spend",
  "Email Subscription Status", "Instant Profile", "Blocked from online booking",
]

[columns]
"Reference ID" = "ref"
"Square Customer ID" = "metadata.square_customer_id"
"Email Address" = "email"
"Phone Number" = "phone"
"First Name" = "metadata.first_name"
"Last Name" = "metadata.last_name"
"Company Name" = "metadata.company"
"City" = "metadata.city"
"Memo" = "metadata.memo"

[constants]
"metadata.source" = "square"

[fallback]
ref = ["Square Customer ID", "Email Address"]
"#;

/// WooCommerce, Analytics > Customers > Download: the report's column
/// labels (woocommerce/woocommerce, `client/admin/client/analytics/report/
/// customers/table.js`, the labels its CSV download writes; documented in
/// https://github.com/woocommerce/woocommerce/blob/trunk/plugins/woocommerce-admin/docs/woocommerce.com/analytics-customers-report.md).
/// The export has no id column and no phone: the email is the ref.
const WOOCOMMERCE: &str = r#"# WooCommerce Analytics customers report (CSV download)
# Source: https://github.com/woocommerce/woocommerce (client/admin/client/analytics/report/customers/table.js)
ignore = ["Last active", "Date registered", "Orders", "Total spend", "AOV"]

[columns]
"Email" = ["ref", "email"]
"Name" = "metadata.name"
"Username" = "metadata.username"
"Country / Region" = "metadata.country"
"City" = "metadata.city"
"Region" = "metadata.region"
"Postal code" = "metadata.postal_code"

[constants]
"metadata.source" = "woocommerce"
"#;

/// HubSpot, Contacts > Export: `Record ID` (older exports: `Contact ID`)
/// and the default contact properties' labels
/// as HubSpot's exports write them (https://developers.hubspot.com/docs/guides/api/crm/exports).
const HUBSPOT: &str = r#"# HubSpot contacts export
# Source: https://developers.hubspot.com/docs/guides/api/crm/exports
ignore = [
  "Contact owner", "Lifecycle Stage", "Lead Status", "Marketing contact status", "Create Date",
  "Last Activity Date", "Associated Company", "Primary Associated Company ID",
  "Associated Company IDs (Primary)", "Email Domain",
]

[columns]
"Record ID" = "ref"
"Contact ID" = "metadata.hubspot_contact_id"
"Email" = "email"
"Phone Number" = "phone"
"Mobile Phone Number" = "address_1"
"First Name" = "metadata.first_name"
"Last Name" = "metadata.last_name"
"Company Name" = "metadata.company"
"Job Title" = "metadata.job_title"
"City" = "metadata.city"
"Country/Region" = "metadata.country"

[constants]
"metadata.source" = "hubspot"

[fallback]
ref = ["Contact ID", "Email"]
"#;

/// Mailchimp, Audience > Export audience: the merge fields' labels, then
/// Mailchimp's own upper-case columns (`MEMBER_RATING`, `OPTIN_TIME`, ...,
/// `TAGS`), as in https://mailchimp.com/developer/marketing/docs/account-exports/
/// and public code reading these files (https://github.com/hahow/json2csv, README). No id column:
/// the email is the ref.
const MAILCHIMP: &str = r#"# Mailchimp audience export
# Source: https://mailchimp.com/developer/marketing/docs/account-exports/ ; https://github.com/hahow/json2csv
ignore = [
  "MEMBER_RATING", "OPTIN_TIME", "OPTIN_IP", "CONFIRM_TIME", "CONFIRM_IP", "LATITUDE", "LONGITUDE",
  "GMTOFF", "DSTOFF", "TIMEZONE", "CC", "REGION", "LAST_CHANGED", "LEID", "EUID", "NOTES", "TAGS",
  "UNSUB_TIME", "UNSUB_CAMPAIGN_TITLE", "UNSUB_CAMPAIGN_ID", "UNSUB_REASON", "UNSUB_REASON_OTHER",
  "CLEAN_TIME", "CLEAN_CAMPAIGN_TITLE", "CLEAN_CAMPAIGN_ID",
]

[columns]
"Email Address" = ["ref", "email"]
"Phone Number" = "phone"
"First Name" = "metadata.first_name"
"Last Name" = "metadata.last_name"
"Address" = "metadata.postal_address"
"Birthday" = "metadata.birthday"
"Company" = "metadata.company"

[constants]
"metadata.source" = "mailchimp"
"#;

fn text_of(name: &str) -> Option<&'static str> {
    Some(match name {
        "shopify" => SHOPIFY,
        "stripe" => STRIPE,
        "square" => SQUARE,
        "woocommerce" => WOOCOMMERCE,
        "hubspot" => HUBSPOT,
        "mailchimp" => MAILCHIMP,
        _ => return None,
    })
}

/// A preset by name (`None`: no such preset).
pub fn get(name: &str) -> Option<Arc<Profile>> {
    static ALL: OnceLock<Vec<Arc<Profile>>> = OnceLock::new();
    let all = ALL.get_or_init(|| {
        NAMES
            .iter()
            .map(|n| {
                let text = text_of(n).expect("every name has a text");
                Arc::new(Profile::parse_as(n, text.as_bytes(), true).expect("a preset is a valid profile"))
            })
            .collect()
    });
    NAMES.iter().position(|n| *n == name).map(|i| Arc::clone(&all[i]))
}

/// Parses a `--presets` value: `all`, `none`, or names separated by commas;
/// the names come back in the order they are tried.
pub fn parse_list(raw: &str) -> Result<Vec<String>, String> {
    let raw = raw.trim();
    match raw {
        "all" => return Ok(NAMES.iter().map(|n| (*n).to_owned()).collect()),
        "none" | "" => return Ok(Vec::new()),
        _ => {}
    }
    let wanted: Vec<String> = raw.split(',').map(|n| n.trim().to_lowercase()).filter(|n| !n.is_empty()).collect();
    if let Some(unknown) = wanted.iter().find(|n| !NAMES.contains(&n.as_str())) {
        return Err(format!("unknown preset `{unknown}` (known: {}, all, none)", NAMES.join(", ")));
    }
    Ok(NAMES.iter().filter(|n| wanted.iter().any(|w| w == *n)).map(|n| (*n).to_owned()).collect())
}
