//! The daemon started in this process through `app::start`, as an embedder
//! (or a test) runs it: the listeners' addresses come back from `start`,
//! with no address file and no log to read; `stop` ends it cleanly.

use crate::support::{client_key, eventually, openssh_sftp, read_results, write_customers, TestDb};
use std::time::Duration;

async fn an_app_started_in_process_serves_an_upload_and_stops_cleanly(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = client_key(dir.path());
    let data_dir = dir.path().join("data");
    let config_path = dir.path().join("config.toml");
    std::fs::write(
        &config_path,
        format!(
            "data_dir = {data_dir:?}\ndatabase_url = {url:?}\n[sftp]\nlisten = \"127.0.0.1:0\"\n\
             auth_rejection_millis = 0\n[http]\nlisten = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n\
             [[accounts]]\navid = \"acme\"\n[[users]]\nusername = \"acme\"\naccount = \"acme\"\nkeys = [{public:?}]\n",
            data_dir = data_dir.display().to_string(),
            url = db.url,
        ),
    )
    .unwrap();
    let config = intake::config::Config::load(&config_path, true).unwrap();
    let app = intake::app::start(config).await.unwrap();
    let (sftp, http) = (app.sftp_addr.expect("SFTP enabled"), app.http_addr.expect("HTTP enabled"));
    assert!(!data_dir.join("sftp.addr").exists(), "start writes no address file");

    let ready = reqwest::get(format!("http://{http}/readyz")).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let file = dir.path().join("in.csv");
    write_customers(&file, "ip-", 5);
    let batch = format!("put {} /customers/in.csv\n", file.display());
    let out = openssh_sftp(dir.path(), &key, &sftp.port().to_string(), "acme", &batch).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = data_dir.join("accounts/acme/outbox/in.summary.json");
    let text = eventually(Duration::from_secs(120), "the summary", || std::fs::read_to_string(&summary).ok()).await;
    let summary: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(summary["created"], 5, "{summary}");
    assert_eq!(read_results(&data_dir.join("accounts/acme/outbox/in.results.csv")).len(), 6);

    app.stop();
    tokio::time::timeout(Duration::from_secs(30), app.wait()).await.expect("stops in time").unwrap();
    assert!(tokio::net::TcpStream::connect(sftp).await.is_err(), "the SFTP listener is closed");
}

crate::on_both_backends!(an_app_started_in_process_serves_an_upload_and_stops_cleanly);
