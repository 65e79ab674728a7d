//! tether's built-in catalogue of VPN, hosting, Tor, proxy and privacy-relay networks by
//! ASN. The data lives in `catalogue.toml` beside this file, readable and versioned with
//! the code, and is compiled into the binary.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;

use super::types::{Asn, Category};

const DATA: &str = include_str!("catalogue.toml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    version: String,
    network: Vec<RawNetwork>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    asn: u32,
    org: String,
    provider: String,
    category: String,
    #[allow(dead_code)]
    source: String,
}

#[derive(Debug)]
pub struct CatalogueEntry {
    pub category: Category,
    pub org: String,
    pub provider: String,
}

#[derive(Debug)]
pub struct Catalogue {
    pub version: String,
    by_asn: HashMap<Asn, CatalogueEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("catalogue is not valid TOML: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("catalogue entry AS{asn}: unknown category {category:?}")]
    Category { asn: u32, category: String },
    #[error("catalogue lists AS{0} twice")]
    Duplicate(u32),
}

impl Catalogue {
    pub fn parse(text: &str) -> Result<Catalogue, CatalogueError> {
        let raw: RawFile = toml::from_str(text)?;
        let mut by_asn = HashMap::with_capacity(raw.network.len());
        for n in raw.network {
            let category = Category::parse(&n.category)
                .filter(|c| !matches!(c, Category::Corporate | Category::Other))
                .ok_or_else(|| CatalogueError::Category { asn: n.asn, category: n.category.clone() })?;
            let entry = CatalogueEntry { category, org: n.org, provider: n.provider };
            if by_asn.insert(Asn(n.asn), entry).is_some() {
                return Err(CatalogueError::Duplicate(n.asn));
            }
        }
        Ok(Catalogue { version: raw.version, by_asn })
    }

    /// The compiled-in catalogue.
    pub fn builtin() -> &'static Catalogue {
        static BUILTIN: OnceLock<Catalogue> = OnceLock::new();
        // invariant: the embedded file is checked by `builtin_catalogue_is_valid` below.
        BUILTIN.get_or_init(|| Catalogue::parse(DATA).expect("built-in catalogue is valid"))
    }

    pub fn get(&self, asn: Asn) -> Option<&CatalogueEntry> {
        self.by_asn.get(&asn)
    }

    pub fn len(&self) -> usize {
        self.by_asn.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_asn.is_empty()
    }

    pub fn count(&self, category: Category) -> usize {
        self.by_asn.values().filter(|e| e.category == category).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalogue_is_valid() {
        let c = Catalogue::parse(DATA).unwrap();
        assert!(!c.version.is_empty());
        assert!(c.len() >= 100, "{} entries", c.len());
        for cat in [Category::Vpn, Category::Hosting] {
            assert!(c.count(cat) > 0, "no {cat} networks");
        }
    }

    #[test]
    fn the_incident_networks_are_catalogued_as_anonymizers() {
        let c = Catalogue::builtin();
        for name in ["Mullvad", "Datacamp", "M247"] {
            let found = c.by_asn.values().any(|e| {
                (e.org.contains(name) || e.provider.contains(name)) && e.category.is_anonymizer()
            });
            assert!(found, "{name} missing from the catalogue");
        }
    }

    #[test]
    fn bad_catalogues_are_rejected() {
        let dup = "version = \"x\"\n[[network]]\nasn = 1\norg = \"a\"\nprovider = \"a\"\ncategory = \"vpn\"\nsource = \"s\"\n[[network]]\nasn = 1\norg = \"b\"\nprovider = \"b\"\ncategory = \"tor\"\nsource = \"s\"\n";
        assert!(matches!(Catalogue::parse(dup), Err(CatalogueError::Duplicate(1))));
        let bad = "version = \"x\"\n[[network]]\nasn = 1\norg = \"a\"\nprovider = \"a\"\ncategory = \"corporate\"\nsource = \"s\"\n";
        assert!(matches!(Catalogue::parse(bad), Err(CatalogueError::Category { .. })));
    }
}
