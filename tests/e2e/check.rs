//! `check-config` refuses what `run` refuses: every file the config names is loaded the
//! way `run` loads it, and every problem is reported at once with its key path.

use std::path::Path;
use std::process::{Command, Output};

use super::support::{certs, geolite};

/// `check-config`'s exit code for an invalid config; a usage error exits 2.
const EXIT_CONFIG: i32 = 3;
const EXIT_USAGE: i32 = 2;

fn tether() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tether"))
}

/// Files a config can name, good and broken, in one directory.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let good = certs();
        let other = certs();
        let dir = tempfile::tempdir().unwrap();
        let put = |name: &str, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes).unwrap();
        put("tls.crt", &std::fs::read(&good.cert).unwrap());
        put("tls.key", &std::fs::read(&good.key).unwrap());
        put("other.key", &std::fs::read(&other.key).unwrap());
        put("garbage.pem", b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n");
        put("hash.key", b"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n");
        put("short.key", b"abcd\n");
        put("admin.token", b"a-token-long-enough-for-the-admin-api\n");
        put("short.token", b"abc\n");
        put("iocs.txt", b"# incident\n178.249.214.10\nAS60068\n");
        put("bad-iocs.txt", b"178.249.214.10\nnot-an-address\n");
        put("corrupt.mmdb", b"this is not a maxmind database at all");
        let asn = std::fs::read(geolite().join("GeoLite2-ASN.mmdb")).unwrap();
        put("truncated.mmdb", &asn[..asn.len() / 2]);
        // The City fixture under a name that says nothing of its type.
        put("city-as-asn.mmdb", &std::fs::read(geolite().join("GeoLite2-City.mmdb")).unwrap());
        std::fs::create_dir(dir.path().join("db-dir")).unwrap();
        Files { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A valid config touching every loader, with `set` replacing or adding `section.key`
/// values (TOML literals).
fn config(set: &[(&str, &str)]) -> String {
    let g = geolite();
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    let mut entries: Vec<(String, String)> = vec![
        ("listen.addr".into(), "\"127.0.0.1:0\"".into()),
        ("listen.tls_cert".into(), "\"tls.crt\"".into()),
        ("listen.tls_key".into(), "\"tls.key\"".into()),
        ("upstream.url".into(), "\"http://127.0.0.1:1\"".into()),
        ("admin.addr".into(), "\"127.0.0.1:0\"".into()),
        ("admin.token_file".into(), "\"admin.token\"".into()),
        ("intel.asn_db".into(), q(&g.join("GeoLite2-ASN.mmdb"))),
        ("intel.city_db".into(), q(&g.join("GeoLite2-City.mmdb"))),
        ("intel.ioc_files".into(), "[\"iocs.txt\"]".into()),
        ("session.cookies".into(), "[\"session\"]".into()),
        ("session.hash_key_file".into(), "\"hash.key\"".into()),
        ("audit.path".into(), "\"audit.jsonl\"".into()),
    ];
    for (key, value) in set {
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = (*value).to_owned(),
            None => entries.push(((*key).to_owned(), (*value).to_owned())),
        }
    }
    let mut sections: Vec<(&str, String)> = Vec::new();
    for (key, value) in &entries {
        let (section, name) = key.rsplit_once('.').unwrap();
        let line = format!("{name} = {value}\n");
        match sections.iter_mut().find(|(s, _)| *s == section) {
            Some(s) => s.1.push_str(&line),
            None => sections.push((section, line)),
        }
    }
    sections.iter().map(|(s, body)| format!("[{s}]\n{body}")).collect()
}

/// A broken config: what is wrong, the values that make it so, the key it must name.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);

fn check(files: &Files, text: &str) -> Output {
    let path = files.path().join("tether.toml");
    std::fs::write(&path, text).unwrap();
    tether().arg("check-config").arg(&path).output().unwrap()
}

#[test]
fn check_config_accepts_a_config_touching_every_loader() {
    let files = Files::new();
    let out = check(&files, &config(&[]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn check_config_refuses_what_run_refuses_naming_the_key() {
    let files = Files::new();
    let g = geolite();
    let asn = format!("{:?}", g.join("GeoLite2-ASN.mmdb").display().to_string());
    let step_up = [
        ("step_up.authorization_endpoint", "\"https://sso.example.com/authorize\""),
        ("step_up.token_endpoint", "\"https://sso.example.com/token\""),
        ("step_up.jwks_uri", "\"https://sso.example.com/jwks\""),
        ("step_up.client_id", "\"tether\""),
        ("step_up.ca_file", "\"garbage.pem\""),
    ];
    let cases: &[Case<'_>] = &[
        ("an ASN database as city_db", vec![("intel.city_db", &asn)], "intel.city_db"),
        ("a City database as asn_db", vec![("intel.asn_db", "\"city-as-asn.mmdb\"")], "intel.asn_db"),
        ("a truncated database", vec![("intel.asn_db", "\"truncated.mmdb\"")], "intel.asn_db"),
        ("a corrupt database", vec![("intel.city_db", "\"corrupt.mmdb\"")], "intel.city_db"),
        ("a directory as a database", vec![("intel.city_db", "\"db-dir\"")], "intel.city_db"),
        ("a bad IoC line", vec![("intel.ioc_files", "[\"iocs.txt\", \"bad-iocs.txt\"]")], "intel.ioc_files[1]"),
        ("a bad privacy-relay file", vec![("intel.allow.privacy_relay_files", "[\"bad-iocs.txt\"]")], "intel.allow.privacy_relay_files[0]"),
        ("a garbage certificate", vec![("listen.tls_cert", "\"garbage.pem\"")], "listen.tls_cert"),
        ("a certificate that is not PEM at all", vec![("listen.tls_cert", "\"hash.key\"")], "listen.tls_cert"),
        ("a garbage key", vec![("listen.tls_key", "\"garbage.pem\"")], "listen.tls_key"),
        ("a key that does not match the certificate", vec![("listen.tls_key", "\"other.key\"")], "listen.tls_key"),
        (
            "a garbage upstream CA",
            vec![("upstream.url", "\"https://127.0.0.1:1\""), ("upstream.ca_file", "\"garbage.pem\"")],
            "upstream.ca_file",
        ),
        ("a garbage IdP CA", step_up.to_vec(), "step_up.ca_file"),
        ("a 4-character session key", vec![("session.hash_key_file", "\"short.key\"")], "session.hash_key_file"),
        ("a short admin token", vec![("admin.token_file", "\"short.token\"")], "admin.token_file"),
        ("a directory as the admin token", vec![("admin.token_file", "\"db-dir\"")], "admin.token_file"),
        ("an audit log in a missing directory", vec![("audit.path", "\"missing/audit.jsonl\"")], "audit.path"),
        ("a typo in a key", vec![("listen.adr", "\"127.0.0.1:1\"")], "listen.adr: unknown key; did you mean `addr`?"),
        ("a typo in a section", vec![("polcy.mode", "\"enforce\"")], "polcy: unknown key; did you mean `policy`?"),
    ];
    let mut failures = Vec::new();
    for (name, set, key) in cases {
        let out = check(&files, &config(set));
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(EXIT_CONFIG) || !stderr.contains(&format!("  {key}")) {
            failures.push(format!("{name}: exit {:?}, want {EXIT_CONFIG} and `{key}` in:\n{stderr}", out.status.code()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn check_config_reports_every_error_at_once() {
    let files = Files::new();
    let text = config(
        &[
            ("intel.asn_db", "\"corrupt.mmdb\""),
            ("intel.city_db", "\"db-dir\""),
            ("listen.tls_key", "\"other.key\""),
            ("session.hash_key_file", "\"short.key\""),
            ("admin.token_file", "\"short.token\""),
        ],
    );
    let out = check(&files, &text);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("5 error(s)"), "{stderr}");
    for key in ["intel.asn_db", "intel.city_db", "listen.tls_key", "session.hash_key_file", "admin.token_file"] {
        assert!(stderr.contains(&format!("\n  {key}: ")), "{key} not named in:\n{stderr}");
    }
}

#[test]
fn run_names_the_key_once_and_the_cause_once() {
    let files = Files::new();
    let text = config(&[("intel.city_db", "\"corrupt.mmdb\"")]);
    let path = files.path().join("tether.toml");
    std::fs::write(&path, text).unwrap();
    let out = tether().args(["run", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(EXIT_CONFIG));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("intel.city_db").count(), 1, "{stderr}");
    assert_eq!(stderr.matches("is not a MaxMind DB file").count(), 1, "{stderr}");
}

#[test]
fn usage_errors_and_invalid_configs_exit_differently() {
    let out = tether().arg("check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(EXIT_USAGE));
    let out = tether().args(["check-config", "--no-such-flag", "x.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(EXIT_USAGE));
    let files = Files::new();
    let out = check(&files, "[listen]\naddr = 1\n");
    assert_eq!(out.status.code(), Some(EXIT_CONFIG));
    let out = tether().arg("check-config").arg(files.path().join("absent.toml")).output().unwrap();
    assert_eq!(out.status.code(), Some(EXIT_CONFIG));
}
