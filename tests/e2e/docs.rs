//! The documents cannot drift from the code: every TOML block in the README and in
//! `docs/` is read by the config loader `check-config` uses, with the files it names
//! standing in as placeholders; and every commented-out key in those blocks (`# key = …`)
//! is a key tether knows, tried one at a time.

use std::path::{Path, PathBuf};

/// Keys whose values are files tether opens while reading the config, and what a
/// placeholder holds (a secret must be long enough to be accepted).
const FILE_KEYS: [(&str, &str); 20] = [
    ("tls_cert", ""),
    ("tls_key", ""),
    ("ca_file", ""),
    ("client_ca", ""),
    ("trusted_proxies_file", "# none\n"),
    ("proxy_secret_file", "a-shared-secret-of-enough-bytes\n"),
    ("token_file", "an-admin-token-of-enough-bytes\n"),
    ("asn_db", ""),
    ("city_db", ""),
    ("anonymous_ip_db", ""),
    ("ioc_files", "# none\n"),
    ("privacy_relay_files", ""),
    ("hash_key_file", ""),
    ("jwks_file", "{\"keys\": []}\n"),
    ("client_secret_file", "secret\n"),
    ("client_private_key_file", ""),
    ("password_file", "password\n"),
    ("path", ""),
    ("state_dir", ""),
    ("catalogue_file", ""),
];

fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs = vec![root.join("README.md")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(root.join("docs")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "md")).collect();
    more.sort();
    docs.extend(more);
    docs
}

/// The ```toml blocks of a Markdown text, with the line each starts on.
fn toml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim_start() == "```toml" => current = Some((n + 1, String::new())),
            Some(_) if line.trim_start() == "```" => out.extend(current.take()),
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    out
}

/// A block made a whole config: `[listen]` and `[upstream]` added when it has none.
fn whole(block: &str) -> String {
    let mut text = String::new();
    if !block.lines().any(|l| l.trim_start().starts_with("[listen]")) {
        text.push_str("[listen]\naddr = \"127.0.0.1:0\"\n");
    }
    if !block.lines().any(|l| l.trim_start().starts_with("[upstream]")) {
        text.push_str("[upstream]\nurl = \"http://127.0.0.1:1\"\n");
    }
    text.push_str(block);
    text
}

/// Creates, in `dir`, a placeholder for each relative file a config text names.
fn placeholders(text: &str, dir: &Path) {
    for line in text.lines() {
        let line = line.trim_start_matches('#').trim();
        let Some((key, value)) = line.split_once('=') else { continue };
        let key = key.trim();
        let Some((_, content)) = FILE_KEYS.iter().find(|(k, _)| *k == key) else { continue };
        for name in value.split('"').skip(1).step_by(2) {
            if name.is_empty() || name.starts_with('/') || name == "-" || name.contains("://") {
                continue;
            }
            let path = dir.join(name);
            if key == "state_dir" {
                std::fs::create_dir_all(&path).unwrap();
            } else if !path.exists() {
                std::fs::write(&path, content).unwrap();
            }
        }
    }
}

#[test]
fn every_toml_block_in_the_documents_is_a_valid_config() {
    let mut checked = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for (line, block) in toml_blocks(&text) {
            let dir = tempfile::tempdir().unwrap();
            let config = whole(&block);
            placeholders(&config, dir.path());
            if let Err(e) = tether::config::Config::parse(&config, dir.path()) {
                panic!("{}:{line}: the block is not a valid config:\n{e}\n{config}", doc.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 4, "only {checked} blocks found");
}

#[test]
fn every_commented_key_in_the_documents_is_a_key_tether_knows() {
    let key_line = |l: &str| {
        let rest = l.strip_prefix('#')?.trim_start();
        let (key, _) = rest.split_once('=')?;
        let key = key.trim();
        (!key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')).then_some(key.to_owned())
    };
    let mut tried = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for (start, block) in toml_blocks(&text) {
            let lines: Vec<&str> = block.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let Some(key) = key_line(line) else { continue };
                // The section it belongs to; a commented-out one is uncommented with it.
                let header = lines[..i].iter().rposition(|l| l.trim_start_matches('#').trim_start().starts_with('['));
                let mut variant: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
                variant[i] = line.trim_start_matches('#').trim_start().to_owned();
                if let Some(h) = header {
                    variant[h] = lines[h].trim_start_matches('#').trim_start().to_owned();
                }
                let config = whole(&variant.join("\n"));
                let dir = tempfile::tempdir().unwrap();
                placeholders(&config, dir.path());
                if let Err(e) = tether::config::Config::parse(&config, dir.path()) {
                    let text = e.to_string();
                    assert!(!text.contains("unknown key") && !text.contains("unknown section"), "{}:{}: `{key}` is not a key tether knows:\n{text}", doc.display(), start + i + 1);
                }
                tried += 1;
            }
        }
    }
    assert!(tried >= 50, "only {tried} commented keys found");
}
