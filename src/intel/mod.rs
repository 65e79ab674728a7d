//! Network intelligence: what kind of network an address belongs to.
//!
//! Precedence, first match wins, for the category:
//!   1. `[intel.allow]` — corporate egress and privacy-relay ranges (CIDR, then ASN);
//!   2. `[intel.networks]` — the operator's own category lists (CIDR, then ASN);
//!   3. GeoIP2-Anonymous-IP flags (Tor, then VPN, then proxy, then hosting);
//!   4. the built-in catalogue, by ASN;
//!   5. otherwise `other`.
//!
//! IoC hits are reported independently of the category: an allowlisted address that is
//! also an indicator is reported as both.

pub mod cache;
pub mod catalogue;
pub mod lists;
pub mod mmdb;
pub mod prefix;
pub mod report;
pub mod types;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use prometheus::IntCounter;

pub use lists::{IocFile, IocHits, IocMatch};
pub use types::{Asn, Category, CategorySource, Coordinates, Country};

use cache::LookupCache;
use catalogue::Catalogue;
use lists::{Entry, IocSet, ListError, NetList};
use mmdb::{Db, DbError, DbKind};

/// Everything known about one address; cheap to clone (the org name is shared).
#[derive(Debug, Clone, PartialEq)]
pub struct NetInfo {
    pub asn: Option<Asn>,
    pub org: Option<Arc<str>>,
    pub country: Option<Country>,
    pub location: Option<Coordinates>,
    pub category: Category,
    pub source: CategorySource,
    pub ioc: IocHits,
}

impl NetInfo {
    pub fn anonymizer(&self) -> bool {
        self.category.is_anonymizer()
    }

    /// What is known when there is no intel at all.
    pub fn unknown() -> NetInfo {
        NetInfo {
            asn: None,
            org: None,
            country: None,
            location: None,
            category: Category::Other,
            source: CategorySource::Default,
            ioc: IocHits::default(),
        }
    }
}

/// The `[intel]` settings, as validated config.
#[derive(Debug, Clone)]
pub struct IntelConfig {
    pub asn_db: PathBuf,
    pub city_db: Option<PathBuf>,
    pub anonymous_ip_db: Option<PathBuf>,
    pub ioc_files: Vec<IocFile>,
    /// Use the built-in catalogue (default true).
    pub catalogue: bool,
    /// `[intel.networks]`: (category, entry) pairs.
    pub networks: Vec<(Category, Entry)>,
    /// `[intel.allow]`: corporate and privacy-relay entries.
    pub allow: Vec<(Category, Entry)>,
    /// Privacy-relay egress files (first CSV column a CIDR).
    pub privacy_relay_files: Vec<PathBuf>,
    /// Bound on cached lookups.
    pub cache_entries: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum IntelError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    List(#[from] ListError),
}

pub struct Intel {
    asn: Db,
    city: Option<Db>,
    anonymous: Option<Db>,
    catalogue: Option<&'static Catalogue>,
    networks: NetList<Category>,
    allow: NetList<Category>,
    iocs: IocSet,
    cache: LookupCache,
    /// Lookups whose database record could not be decoded (treated as unknown).
    lookup_errors: IntCounter,
}

impl Intel {
    /// Loads every database and list; any failure names its file.
    pub fn load(cfg: &IntelConfig, lookup_errors: IntCounter) -> Result<Intel, IntelError> {
        let asn = Db::open(&cfg.asn_db, DbKind::Asn)?;
        let city = cfg.city_db.as_deref().map(|p| Db::open(p, DbKind::City)).transpose()?;
        let anonymous = cfg.anonymous_ip_db.as_deref().map(|p| Db::open(p, DbKind::AnonymousIp)).transpose()?;
        Intel::assemble(asn, city, anonymous, cfg, lookup_errors)
    }

    /// Builds from already-opened databases (the demo embeds its fixtures).
    pub fn assemble(
        asn: Db,
        city: Option<Db>,
        anonymous: Option<Db>,
        cfg: &IntelConfig,
        lookup_errors: IntCounter,
    ) -> Result<Intel, IntelError> {
        let mut allow = lists::category_list(&cfg.allow);
        for path in &cfg.privacy_relay_files {
            for net in lists::read_relay_file(path)? {
                allow.insert(Entry::Net(net), Category::PrivacyRelay);
            }
        }
        Ok(Intel {
            asn,
            city,
            anonymous,
            catalogue: cfg.catalogue.then(Catalogue::builtin),
            networks: lists::category_list(&cfg.networks),
            allow,
            iocs: IocSet::load(&cfg.ioc_files)?,
            cache: LookupCache::new(cfg.cache_entries),
            lookup_errors,
        })
    }

    /// What tether knows about `ip`, from the cache when possible.
    pub fn lookup(&self, ip: IpAddr) -> NetInfo {
        let ip = ip.to_canonical();
        if let Some(hit) = self.cache.get(&ip) {
            return hit;
        }
        let info = self.lookup_uncached(ip);
        self.cache.put(ip, info.clone());
        info
    }

    pub fn lookup_uncached(&self, ip: IpAddr) -> NetInfo {
        let ip = ip.to_canonical();
        let (asn, org) = self.asn.asn(ip).unwrap_or_else(|_| self.failed());
        let (country, location) = match &self.city {
            Some(db) => db.geo(ip).unwrap_or_else(|_| self.failed()),
            None => (None, None),
        };
        let (category, source) = self.categorize(ip, asn);
        NetInfo { asn, org, country, location, category, source, ioc: self.iocs.hits(ip, asn) }
    }

    fn failed<T: Default>(&self) -> T {
        self.lookup_errors.inc();
        T::default()
    }

    fn categorize(&self, ip: IpAddr, asn: Option<Asn>) -> (Category, CategorySource) {
        if let Some(c) = self.allow.get(ip, asn) {
            return (c, CategorySource::Allowlist);
        }
        if let Some(c) = self.networks.get(ip, asn) {
            return (c, CategorySource::OperatorList);
        }
        if let Some(db) = &self.anonymous {
            if let Some(c) = db.anonymous(ip).unwrap_or_else(|_| self.failed()) {
                return (c, CategorySource::AnonymousIpDb);
            }
        }
        if let Some(entry) = asn.and_then(|a| self.catalogue?.get(a)) {
            return (entry.category, CategorySource::Catalogue);
        }
        (Category::Other, CategorySource::Default)
    }

    /// Every IoC entry matching `ip` (the slow, reporting path).
    pub fn ioc_matches(&self, ip: IpAddr, asn: Option<Asn>) -> Vec<IocMatch> {
        self.iocs.matches(ip.to_canonical(), asn)
    }

    /// The loaded databases, for metrics and reports.
    pub fn databases(&self) -> impl Iterator<Item = &Db> {
        std::iter::once(&self.asn).chain(self.city.as_ref()).chain(self.anonymous.as_ref())
    }

    pub fn catalogue_version(&self) -> Option<&str> {
        self.catalogue.map(|c| c.version.as_str())
    }

    pub fn ioc_count(&self) -> usize {
        self.iocs.len()
    }
}

#[cfg(test)]
mod tests;
