use super::*;
use crate::policy::Mode;

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(text, Path::new("/nonexistent-base"))
}

fn paths(err: &ConfigErrors) -> Vec<&str> {
    err.0.iter().map(|e| e.path.as_str()).collect()
}

#[test]
fn minimal_plaintext_config_is_valid_with_defaults() {
    let cfg = parse("[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:8080\"\n").unwrap();
    assert!(cfg.listen.tls.is_none());
    assert!(cfg.listen.trusted_proxies.is_empty());
    assert_eq!(cfg.admin.addr, "127.0.0.1:9090".parse().unwrap());
    assert_eq!(cfg.policy.mode, Mode::Enforce);
    assert_eq!(cfg.limits.max_headers, 100);
    assert!(cfg.upstream.preserve_host);
}

#[test]
fn every_bad_key_is_named() {
    let text = r#"
bogus_top = 1
[listen]
addr = "not an address"
trusted_proxies = ["10.0.0.0/8", "banana", 7]
tls_cert = "missing.crt"
colour = "blue"
[upstream]
url = "ftp://example.com"
[limits]
header_read_timeout = "soon"
max_headers = 0
max_body_bytes = "lots"
[policy]
mode = "panic"
[session]
cookies = ["ok", "bad;name"]
"#;
    let err = parse(text).unwrap_err();
    let p = paths(&err);
    for expected in [
        "bogus_top",
        "listen.addr",
        "listen.trusted_proxies[1]",
        "listen.trusted_proxies[2]",
        "listen.tls_cert",
        "listen.tls_key",
        "listen.colour",
        "upstream.url",
        "limits.header_read_timeout",
        "limits.max_headers",
        "limits.max_body_bytes",
        "policy.mode",
        "session.cookies[1]",
    ] {
        assert!(p.contains(&expected), "missing {expected} in {p:?}");
    }
    // One report per problem, not one per getter call.
    let mut dedup = p.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), p.len(), "{p:?}");
}

#[test]
fn missing_required_sections_are_reported() {
    let err = parse("").unwrap_err();
    let p = paths(&err);
    assert!(p.contains(&"listen.addr"));
    assert!(p.contains(&"upstream.url"));
}

#[test]
fn syntax_error_is_one_clear_error() {
    let err = parse("[listen\naddr=").unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert!(matches!(err.0[0].problem, Problem::Syntax(_)));
}

#[test]
fn full_contract_file_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["tls.crt", "tls.key", "GeoLite2-ASN.mmdb", "GeoLite2-City.mmdb", "iocs.txt", "client.secret", "idp-ca.pem"] {
        std::fs::write(dir.path().join(f), "x").unwrap();
    }
    let text = r#"
[listen]
addr = "0.0.0.0:8443"
tls_cert = "tls.crt"
tls_key = "tls.key"
trusted_proxies = ["10.0.0.0/8"]
[upstream]
url = "http://127.0.0.1:8080"
[admin]
addr = "127.0.0.1:9090"
[intel]
asn_db = "GeoLite2-ASN.mmdb"
city_db = "GeoLite2-City.mmdb"
ioc_files = ["iocs.txt"]
[session]
cookies = ["session"]
[policy]
mode = "enforce"
[step_up]
authorization_endpoint = "https://sso.example.com/authorize"
token_endpoint = "https://sso.example.com/token"
jwks_uri = "https://sso.example.com/jwks"
client_id = "tether"
client_secret_file = "client.secret"
acr_values = "urn:example:mfa"
ca_file = "idp-ca.pem"
[audit]
path = "audit.jsonl"
"#;
    let cfg = Config::parse(text, dir.path()).unwrap();
    assert_eq!(cfg.listen.tls.unwrap().cert, dir.path().join("tls.crt"));
    assert_eq!(cfg.session.cookies, vec!["session"]);
    assert!(matches!(cfg.step_up.unwrap().endpoints, IdpEndpoints::Explicit { .. }));
    assert!(matches!(cfg.audit.sink, AuditSink::File(_)));
    let intel = cfg.intel.unwrap();
    assert_eq!(intel.ioc_files[0].label, "iocs");
    assert!(intel.catalogue);
}

#[test]
fn step_up_conflicts_are_reported() {
    let text = r#"
[listen]
addr = "127.0.0.1:0"
[upstream]
url = "http://127.0.0.1:1"
[step_up]
issuer = "https://sso.example.com"
token_endpoint = "https://sso.example.com/token"
client_secret = "s"
client_auth = "magic"
"#;
    let err = parse(text).unwrap_err();
    let p = paths(&err);
    for k in ["step_up.authorization_endpoint", "step_up.jwks_uri", "step_up.client_id", "step_up.client_auth"] {
        assert!(p.contains(&k), "{k} in {p:?}");
    }
}

#[test]
fn explicit_endpoints_take_the_issuer_or_derive_it() {
    let base = "[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[step_up]\nauthorization_endpoint = \"https://sso.example.com:8443/oauth2/authorize\"\ntoken_endpoint = \"https://sso.example.com:8443/oauth2/token\"\njwks_uri = \"https://sso.example.com:8443/oauth2/keys\"\nclient_id = \"tether\"\n";
    let cfg = parse(base).unwrap();
    let su = cfg.step_up.unwrap();
    assert!(matches!(&su.endpoints, IdpEndpoints::Explicit { issuer, .. } if issuer == "https://sso.example.com:8443"));
    assert_eq!(su.client_auth, ClientAuth::None);
    assert_eq!(su.max_failures, 3);
    let cfg = parse(&format!("{base}issuer = \"https://sso.example.com/oauth2/default\"\nclient_secret = \"x\"\n")).unwrap();
    let su = cfg.step_up.unwrap();
    assert!(matches!(&su.endpoints, IdpEndpoints::Explicit { issuer, .. } if issuer == "https://sso.example.com/oauth2/default"));
    assert_eq!(su.client_auth, ClientAuth::SecretBasic);
}

#[test]
fn plain_http_idp_endpoints_are_refused_unless_allowed() {
    let base = "[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[step_up]\nclient_id = \"tether\"\n";
    for endpoints in [
        "issuer = \"http://sso.example.com\"\n",
        "authorization_endpoint = \"http://sso.example.com/a\"\ntoken_endpoint = \"https://sso.example.com/t\"\njwks_uri = \"https://sso.example.com/k\"\n",
    ] {
        let err = parse(&format!("{base}{endpoints}")).unwrap_err();
        assert!(paths(&err).iter().any(|p| p.starts_with("step_up.")), "{endpoints}: {:?}", paths(&err));
        let cfg = parse(&format!("{base}{endpoints}allow_insecure_http = true\n")).unwrap();
        assert!(cfg.step_up.unwrap().allow_insecure_http);
    }
}

#[test]
fn secret_never_in_debug() {
    let s = ClientSecret::Inline("hunter2".into());
    assert!(!format!("{s:?}").contains("hunter2"));
}

#[test]
fn intel_lists_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["asn.mmdb", "a.txt", "relay.csv"] {
        std::fs::write(dir.path().join(f), "x").unwrap();
    }
    let text = r#"
[listen]
addr = "127.0.0.1:0"
[upstream]
url = "http://127.0.0.1:1"
[intel]
asn_db = "asn.mmdb"
ioc_files = [{ path = "a.txt", label = "incident-2023" }, { path = "missing.txt" }, 7]
[intel.networks]
vpn = ["AS9009", "203.0.113.0/24", "bogus"]
hosting = ["AS16509"]
[intel.allow]
corporate = ["AS64500"]
privacy_relay_files = ["relay.csv"]
colour = "red"
"#;
    let err = Config::parse(text, dir.path()).unwrap_err();
    let p = paths(&err);
    for expected in ["intel.ioc_files[1]", "intel.ioc_files[2]", "intel.networks.vpn[2]", "intel.allow.colour"] {
        assert!(p.contains(&expected), "missing {expected} in {p:?}");
    }
    let good = text
        .replace(r#", { path = "missing.txt" }, 7"#, "")
        .replace(r#", "bogus""#, "")
        .replace("colour = \"red\"\n", "");
    let cfg = Config::parse(&good, dir.path()).unwrap();
    let intel = cfg.intel.unwrap();
    assert_eq!(intel.ioc_files[0].label, "incident-2023");
    assert_eq!(intel.networks.len(), 3);
    assert_eq!(intel.allow.len(), 1);
    assert_eq!(intel.privacy_relay_files.len(), 1);
}

#[test]
fn redirect_uri_must_end_in_the_callback_path() {
    let base = "[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[step_up]\nissuer = \"https://sso.example.com\"\nclient_id = \"tether\"\n";
    let good = format!("{base}redirect_uri = \"https://admin.example{}\"\n", crate::paths::CALLBACK);
    assert!(parse(&good).unwrap().step_up.unwrap().redirect_uri.is_some());
    let err = parse(&format!("{base}redirect_uri = \"https://admin.example/callback\"\n")).unwrap_err();
    assert_eq!(paths(&err), ["step_up.redirect_uri"]);
    assert!(err.to_string().contains(crate::paths::CALLBACK), "{err}");
}

#[test]
fn store_section_reads_redis_and_names_every_bad_key() {
    let base = "[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:8080\"\n";
    let cfg = parse(base).unwrap();
    assert!(matches!(cfg.store, Store::Memory));
    assert!(cfg.session.state_dir.is_none());

    let good = format!(
        "{base}[session]\nstate_dir = \"state\"\n[store]\nbackend = \"redis\"\nurl = \"redis://10.0.0.5:6379/2\"\nkey_prefix = \"t1:\"\ncommand_timeout = \"100ms\"\npool_size = 4\non_error = \"refuse\"\n"
    );
    let cfg = parse(&good).unwrap();
    assert_eq!(cfg.session.state_dir.as_deref(), Some(Path::new("/nonexistent-base/state")));
    let Store::Redis(r) = cfg.store else { panic!("redis expected") };
    assert_eq!(r.url, "redis://10.0.0.5:6379/2");
    assert_eq!(r.key_prefix, "t1:");
    assert_eq!(r.command_timeout, std::time::Duration::from_millis(100));
    assert_eq!(r.connect_timeout, crate::session::redis::RedisConfig::default().connect_timeout);
    assert_eq!(r.pool_size, 4);
    assert_eq!(r.on_error, crate::session::redis::OnError::Refuse);

    let bad = format!(
        "{base}[store]\nbackend = \"redis\"\nurl = \"http://x\"\nca_file = \"missing.pem\"\nkey_prefix = \"has space\"\npool_size = 0\non_error = \"shrug\"\ncommand_timeout = \"soon\"\ncolour = 1\n"
    );
    let err = parse(&bad).unwrap_err();
    let p = paths(&err);
    for expected in ["store.url", "store.ca_file", "store.key_prefix", "store.pool_size", "store.on_error", "store.command_timeout", "store.colour"] {
        assert!(p.contains(&expected), "missing {expected} in {p:?}");
    }
    let err = parse(&format!("{base}[store]\nbackend = \"redis\"\n")).unwrap_err();
    assert_eq!(paths(&err), ["store.url"]);
    let err = parse(&format!("{base}[store]\nbackend = \"etcd\"\n")).unwrap_err();
    assert_eq!(paths(&err), ["store.backend"]);
    let err = parse(&format!("{base}[store]\nurl = \"redis://x\"\n")).unwrap_err();
    assert_eq!(paths(&err), ["store.url"], "redis settings with the memory backend are named");
}

#[test]
fn log_section_reads_format_and_access_and_names_its_mistakes() {
    const BASE: &str = "[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:8080\"\n";
    let cfg = parse(BASE).unwrap();
    assert_eq!((cfg.log.format, cfg.log.access), (LogFormat::Text, false));
    let cfg = parse(&format!("{BASE}[log]\nformat = \"json\"\naccess = true\n")).unwrap();
    assert_eq!((cfg.log.format, cfg.log.access), (LogFormat::Json, true));
    let err = parse(&format!("{BASE}[log]\nformat = \"yaml\"\nacess = true\n")).unwrap_err();
    assert_eq!(paths(&err), ["log.format", "log.acess"]);
    assert_eq!(err.0[1].to_string(), "log.acess: unknown key; did you mean `access`?");
}

#[test]
fn idp_presets_and_their_keys() {
    let base = "[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[step_up]\nclient_id = \"tether\"\n";
    let su = |extra: &str| parse(&format!("{base}{extra}")).map(|c| c.step_up.unwrap());
    let plain = su("issuer = \"https://sso.example.com\"\n").unwrap();
    assert_eq!((plain.provider, plain.proxy.clone()), (Provider::Generic, EgressProxy::Environment), "generic and the environment by default");

    let entra = su("issuer = \"https://login.microsoftonline.com/organizations/v2.0\"\nprovider = \"entra\"\nacrs = [\"c1\", \"c2\"]\ntenants = [\"9122040D-6C67-4C5B-B112-36A304B66DAD\"]\n").unwrap();
    assert_eq!(entra.acrs, ["c1", "c2"]);
    assert_eq!(entra.tenants, ["9122040d-6c67-4c5b-b112-36a304b66dad"]);
    for issuer in ["common", "organizations"] {
        let err = su(&format!("issuer = \"https://login.microsoftonline.com/{issuer}/v2.0\"\nprovider = \"entra\"\n")).unwrap_err();
        assert_eq!(paths(&err), ["step_up.tenants"], "a multi-tenant issuer needs its tenants");
    }
    su("issuer = \"https://login.microsoftonline.com/9122040d-6c67-4c5b-b112-36a304b66dad/v2.0\"\nprovider = \"entra\"\n").unwrap();

    let kc = su("issuer = \"https://kc.example/realms/corp\"\nprovider = \"keycloak\"\nacr_values = \"gold\"\nacr_levels = { silver = 1, gold = 2 }\n").unwrap();
    assert_eq!(kc.acr_levels, [("gold".to_owned(), 2), ("silver".to_owned(), 1)]);
    let err = su("issuer = \"https://kc.example/realms/corp\"\nprovider = \"keycloak\"\nacr_levels = { gold = \"high\", silver = -1 }\n").unwrap_err();
    assert_eq!(paths(&err), ["step_up.acr_levels.gold", "step_up.acr_levels.silver"]);

    // A preset's keys belong to it alone.
    let err = su("issuer = \"https://sso.example.com\"\nacrs = [\"c1\"]\ntenants = [\"t\"]\nacr_levels = { gold = 2 }\n").unwrap_err();
    assert_eq!(paths(&err), ["step_up.acrs", "step_up.tenants", "step_up.acr_levels"]);
    let err = su("issuer = \"https://sso.example.com\"\nprovider = \"azure\"\n").unwrap_err();
    assert_eq!(paths(&err), ["step_up.provider"]);
}

#[test]
fn the_idp_proxy_key() {
    let base = "[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[step_up]\nclient_id = \"tether\"\nissuer = \"https://sso.example.com\"\n";
    let proxy = |v: &str| parse(&format!("{base}proxy = \"{v}\"\n")).map(|c| c.step_up.unwrap().proxy);
    assert_eq!(proxy("direct").unwrap(), EgressProxy::Direct);
    let EgressProxy::Via(url) = proxy("http://ops:pa%24%24@proxy.corp:3128").unwrap() else { panic!("a proxy URL") };
    assert_eq!((url.host.as_str(), url.port, url.credentials.as_deref()), ("proxy.corp", 3128, Some("ops:pa$$")));
    let err = proxy("https://ops:hunter2@proxy.corp:3128").unwrap_err();
    assert_eq!(paths(&err), ["step_up.proxy"]);
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn dbsc_is_off_by_default_and_every_bad_key_is_named() {
    let base = "[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:8080\"\n[session]\ncookies = [\"session\"]\n";
    let cfg = parse(base).unwrap();
    assert!(!cfg.dbsc.enabled);
    assert_eq!((cfg.dbsc.bound_cookie.as_str(), cfg.dbsc.bound_lifetime), ("__Host-tether-bound", 600));
    let good = parse(&format!("{base}[dbsc]\nenabled = true\nroutes = [\"/admin\"]\nbound_lifetime = \"15m\"\non_risk = \"challenge\"\nlogin_route = \"/admin/login\"\n")).unwrap();
    assert_eq!((good.dbsc.bound_lifetime, good.dbsc.on_risk), (900, crate::dbsc::OnRisk::Challenge));
    let bad = format!(
        "{base}[dbsc]\nenabled = true\nroutes = [\"admin\"]\nuser_agents = [\"\"]\nbound_cookie = \"session\"\nbound_lifetime = \"30s\"\nlogin_route = \"login\"\non_risk = \"maybe\"\ncolour = 1\n"
    );
    let err = parse(&bad).unwrap_err();
    let mut got = paths(&err);
    got.sort();
    assert_eq!(got, ["dbsc.bound_cookie", "dbsc.bound_lifetime", "dbsc.colour", "dbsc.login_route", "dbsc.on_risk", "dbsc.routes[0]", "dbsc.user_agents[0]"], "{err}");
}

#[test]
fn the_lineage_section_has_defaults_and_names_its_mistakes() {
    let base = "[listen]\naddr = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:8080\"\n[session]\ncookies = [\"__Host-sess\"]\n";
    assert!(parse(base).unwrap().lineage.is_none(), "off by default");
    assert!(parse(&format!("{base}[lineage]\nenabled = false\nrotate_every = \"1m\"\n")).unwrap().lineage.is_none());
    let on = parse(&format!("{base}[lineage]\nenabled = true\n")).unwrap().lineage.unwrap();
    assert_eq!((on.rotate_every, on.grace, on.cookie.as_str()), (300, 10, "__Host-tether-lineage"));
    let set = parse(&format!("{base}[lineage]\nenabled = true\nrotate_every = \"2m\"\ngrace = 5\ncookie = \"__Host-lin\"\n")).unwrap().lineage.unwrap();
    assert_eq!((set.rotate_every, set.grace, set.cookie.as_str()), (120, 5, "__Host-lin"));
    // (lines, the key named, what the message says)
    let rows = [
        ("rotate_every = \"10s\"\ngrace = \"10s\"", "lineage.grace", "shorter than lineage.rotate_every"),
        ("rotate_every = \"1500ms\"", "lineage.rotate_every", "whole number of seconds"),
        ("rotate_every = \"2d\"", "lineage.rotate_every", "within its bound"),
        ("cookie = \"tether-lineage\"", "lineage.cookie", "__Host-"),
        ("cookie = \"__Host-\"", "lineage.cookie", "__Host-"),
        ("cookie = \"__Host-SESS\"", "lineage.cookie", "session.cookies"),
        ("rotate_evry = \"5m\"", "lineage.rotate_evry", "did you mean `rotate_every`"),
        ("rotate_every = \"1s\"\ngrace = \"1s\"", "lineage.rotate_every", "between 2 and 43200"),
    ];
    for (lines, key, says) in rows {
        let err = parse(&format!("{base}[lineage]\nenabled = true\n{lines}\n")).unwrap_err();
        assert_eq!(paths(&err), [key], "{lines}");
        assert!(err.to_string().contains(says), "{lines}: {err}");
    }
    // A rotation as long as the idle lifetime: the session is forgotten before its value
    // is due, and its lineage with it.
    let idle = base.replace("[session]\n", "[session]\nidle_ttl = \"10m\"\n");
    let err = parse(&format!("{idle}[lineage]\nenabled = true\nrotate_every = \"10m\"\n")).unwrap_err();
    assert_eq!(paths(&err), ["lineage.rotate_every"], "{err}");
    assert!(err.to_string().contains("session.idle_ttl"), "{err}");
    assert!(parse(&format!("{idle}[lineage]\nenabled = true\nrotate_every = \"9m\"\n")).is_ok());
    // Test-sized values are accepted, and warned about.
    let fast = parse(&format!("{base}[lineage]\nenabled = true\nrotate_every = \"2s\"\ngrace = \"1s\"\n")).unwrap();
    assert!(fast.warnings().iter().any(|w| w.starts_with("lineage:")), "{:?}", fast.warnings());
    assert!(!parse(&format!("{base}[lineage]\nenabled = true\n")).unwrap().warnings().iter().any(|w| w.starts_with("lineage:")), "the defaults are not warned about");
}
