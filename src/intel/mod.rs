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

/// One file of `[intel]` that could not be loaded, named by the key that points at it.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {cause}")]
pub struct IntelError {
    /// Dotted key path, e.g. `intel.city_db` or `intel.ioc_files[1]`.
    pub key: String,
    #[source]
    pub cause: IntelCause,
}

#[derive(Debug, thiserror::Error)]
pub enum IntelCause {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    List(#[from] ListError),
}

/// Every file of `[intel]` that could not be loaded: an operator fixing a rollout wants
/// them all at once, not one per attempt.
#[derive(Debug)]
pub struct IntelErrors(pub Vec<IntelError>);

impl std::fmt::Display for IntelErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::report::Joined(&self.0).fmt(f)
    }
}

impl std::error::Error for IntelErrors {}

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
    /// Loads every database and list; every failure is reported, each with its key.
    pub fn load(cfg: &IntelConfig, lookup_errors: IntCounter) -> Result<Intel, IntelErrors> {
        let mut errors = Vec::new();
        let mut open = |key: &str, path: &std::path::Path, kind| match Db::open(path, kind) {
            Ok(db) => Some(db),
            Err(e) => {
                errors.push(IntelError { key: format!("intel.{key}"), cause: e.into() });
                None
            }
        };
        let asn = open("asn_db", &cfg.asn_db, DbKind::Asn);
        let city = cfg.city_db.as_deref().and_then(|p| open("city_db", p, DbKind::City));
        let anonymous = cfg.anonymous_ip_db.as_deref().and_then(|p| open("anonymous_ip_db", p, DbKind::AnonymousIp));
        let lists = Lists::load(cfg);
        match (asn, lists) {
            // Without errors, a database missing here is one the config does not name.
            (Some(asn), Ok(lists)) if errors.is_empty() => Ok(Intel::with_lists(asn, city, anonymous, cfg, lists, lookup_errors)),
            (_, lists) => {
                errors.extend(lists.err().into_iter().flat_map(|e| e.0));
                Err(IntelErrors(errors))
            }
        }
    }

    /// Builds from already-opened databases (the demo embeds its fixtures).
    pub fn assemble(
        asn: Db,
        city: Option<Db>,
        anonymous: Option<Db>,
        cfg: &IntelConfig,
        lookup_errors: IntCounter,
    ) -> Result<Intel, IntelErrors> {
        let lists = Lists::load(cfg)?;
        Ok(Intel::with_lists(asn, city, anonymous, cfg, lists, lookup_errors))
    }

    fn with_lists(asn: Db, city: Option<Db>, anonymous: Option<Db>, cfg: &IntelConfig, lists: Lists, lookup_errors: IntCounter) -> Intel {
        Intel {
            asn,
            city,
            anonymous,
            catalogue: cfg.catalogue.then(Catalogue::builtin),
            networks: lists::category_list(&cfg.networks),
            allow: lists.allow,
            iocs: lists.iocs,
            cache: LookupCache::new(cfg.cache_entries),
            lookup_errors,
        }
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

/// The operator's files: the privacy-relay allowlist and the IoC set.
struct Lists {
    allow: NetList<Category>,
    iocs: IocSet,
}

impl Lists {
    fn load(cfg: &IntelConfig) -> Result<Lists, IntelErrors> {
        let mut errors = Vec::new();
        let mut allow = lists::category_list(&cfg.allow);
        for (i, path) in cfg.privacy_relay_files.iter().enumerate() {
            match lists::read_relay_file(path) {
                Ok(nets) => nets.into_iter().for_each(|net| allow.insert(Entry::Net(net), Category::PrivacyRelay)),
                Err(e) => errors.push(IntelError { key: format!("intel.allow.privacy_relay_files[{i}]"), cause: e.into() }),
            }
        }
        let iocs = IocSet::load(&cfg.ioc_files).map_err(|e| {
            // The error names its file; the key names the file's place in the list.
            let at = e.path().and_then(|p| cfg.ioc_files.iter().position(|f| f.path == p));
            let key = at.map_or_else(|| "intel.ioc_files".to_owned(), |i| format!("intel.ioc_files[{i}]"));
            errors.push(IntelError { key, cause: e.into() });
        });
        match iocs {
            Ok(iocs) if errors.is_empty() => Ok(Lists { allow, iocs }),
            _ => Err(IntelErrors(errors)),
        }
    }
}

#[cfg(test)]
mod tests;
