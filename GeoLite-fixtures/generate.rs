//! Generates the fixture MaxMind databases from `source.toml` beside this file.
//!
//!     cargo run --example geolite-fixtures            # rewrite the .mmdb files
//!     cargo run --example geolite-fixtures -- --check # exit 1 if they are out of date
//!
//! The output is byte-for-byte reproducible: the build time is fixed in the source file.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use ipnet::IpNet;
use mmdb_writer::Writer;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Source {
    build_epoch: u64,
    network: Vec<Network>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Network {
    net: IpNet,
    asn: u32,
    org: String,
    country: String,
    country_name: String,
    city: Option<String>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    accuracy_radius: Option<u16>,
    /// Anonymous-IP flags: any of vpn, hosting, tor, public_proxy, residential_proxy.
    #[serde(default)]
    anonymous: Vec<String>,
    #[allow(dead_code)]
    note: Option<String>,
}

#[derive(Serialize)]
struct AsnRecord<'a> {
    autonomous_system_number: u32,
    autonomous_system_organization: &'a str,
}

#[derive(Serialize)]
struct Names<'a> {
    en: &'a str,
}

#[derive(Serialize)]
struct CountryRecord<'a> {
    iso_code: &'a str,
    names: Names<'a>,
}

#[derive(Serialize)]
struct CityName<'a> {
    names: Names<'a>,
}

#[derive(Serialize)]
struct Location {
    latitude: f64,
    longitude: f64,
    accuracy_radius: u16,
}

#[derive(Serialize)]
struct CityRecord<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    city: Option<CityName<'a>>,
    country: CountryRecord<'a>,
    registered_country: CountryRecord<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<Location>,
}

fn build(source: &Source) -> Result<BTreeMap<&'static str, Vec<u8>>, Box<dyn std::error::Error>> {
    let epoch = UNIX_EPOCH + Duration::from_secs(source.build_epoch);
    let writer = |kind: &str| {
        Writer::builder(kind)
            .description(&[("en", "tether test fixture; documentation, loopback and incident networks only")])
            .build_epoch(epoch)
            .build()
    };
    let mut asn = writer("GeoLite2-ASN");
    let mut city = writer("GeoLite2-City");
    let mut anon = writer("GeoIP2-Anonymous-IP");
    for n in &source.network {
        asn.insert(n.net, &AsnRecord { autonomous_system_number: n.asn, autonomous_system_organization: &n.org })?;
        let country = || CountryRecord { iso_code: &n.country, names: Names { en: &n.country_name } };
        let location = match (n.latitude, n.longitude) {
            (Some(latitude), Some(longitude)) => Some(Location { latitude, longitude, accuracy_radius: n.accuracy_radius.unwrap_or(100) }),
            _ => None,
        };
        let record = CityRecord {
            city: n.city.as_deref().map(|c| CityName { names: Names { en: c } }),
            country: country(),
            registered_country: country(),
            location,
        };
        city.insert(n.net, &record)?;
        if !n.anonymous.is_empty() {
            let mut flags = BTreeMap::new();
            flags.insert("is_anonymous", true);
            for f in &n.anonymous {
                let key = match f.as_str() {
                    "vpn" => "is_anonymous_vpn",
                    "hosting" => "is_hosting_provider",
                    "tor" => "is_tor_exit_node",
                    "public_proxy" => "is_public_proxy",
                    "residential_proxy" => "is_residential_proxy",
                    other => return Err(format!("{}: unknown anonymous flag {other:?}", n.net).into()),
                };
                flags.insert(key, true);
            }
            anon.insert(n.net, &flags)?;
        }
    }
    let mut out = BTreeMap::new();
    out.insert("GeoLite2-ASN.mmdb", asn.to_bytes()?);
    out.insert("GeoLite2-City.mmdb", city.to_bytes()?);
    out.insert("GeoIP2-Anonymous-IP.mmdb", anon.to_bytes()?);
    Ok(out)
}

fn main() -> ExitCode {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("GeoLite-fixtures");
    let check = std::env::args().any(|a| a == "--check");
    let text = match std::fs::read_to_string(dir.join("source.toml")) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read source.toml: {e}");
            return ExitCode::FAILURE;
        }
    };
    let source: Source = match toml::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("source.toml: {e}");
            return ExitCode::FAILURE;
        }
    };
    let files = match build(&source) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cannot build fixtures: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stale = false;
    for (name, bytes) in files {
        let path = dir.join(name);
        if check {
            if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
                eprintln!("{name} is out of date: run `cargo run --example geolite-fixtures`");
                stale = true;
            }
        } else if let Err(e) = std::fs::write(&path, &bytes) {
            eprintln!("cannot write {name}: {e}");
            return ExitCode::FAILURE;
        } else {
            println!("wrote {name} ({} bytes)", bytes.len());
        }
    }
    if stale { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
