//! MaxMind DB readers: ASN (required for the detector), City or Country, Anonymous-IP.
//!
//! Each file is read whole into memory, its type checked against its role, so a
//! swapped or corrupt file is refused with its name at load, never at request time.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use maxminddb::Reader;
use serde::Deserialize;

use super::types::{Asn, Category, Coordinates, Country};

crate::labels::labels! {
    /// What a database is for; its `database_type` metadata must fit.
    pub enum DbKind {
        Asn = "asn",
        City = "city",
        AnonymousIp = "anonymous_ip",
    }
}

impl DbKind {
    fn accepts(self, database_type: &str) -> bool {
        match self {
            DbKind::Asn => database_type.contains("ASN") || database_type.contains("ISP"),
            DbKind::City => database_type.contains("City") || database_type.contains("Country"),
            DbKind::AnonymousIp => database_type.contains("Anonymous-IP"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} is not a MaxMind DB file: {source}", path.display())]
    Corrupt { path: PathBuf, source: maxminddb::MaxMindDbError },
    #[error("{} is a {found:?} database, not usable as the {} database", path.display(), kind.as_str())]
    WrongType { path: PathBuf, kind: DbKind, found: String },
}

pub struct Db {
    reader: Reader<Vec<u8>>,
    pub path: PathBuf,
    pub kind: DbKind,
}

#[derive(Deserialize)]
struct AsnRecord<'a> {
    autonomous_system_number: Option<u32>,
    #[serde(borrow)]
    autonomous_system_organization: Option<&'a str>,
}

#[derive(Deserialize)]
struct CountryRecord<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct LocationRecord {
    latitude: Option<f64>,
    longitude: Option<f64>,
    accuracy_radius: Option<u16>,
}

#[derive(Deserialize)]
struct GeoRecord<'a> {
    #[serde(borrow)]
    country: Option<CountryRecord<'a>>,
    #[serde(borrow)]
    registered_country: Option<CountryRecord<'a>>,
    location: Option<LocationRecord>,
}

#[derive(Deserialize, Default)]
struct AnonymousRecord {
    is_anonymous_vpn: Option<bool>,
    is_hosting_provider: Option<bool>,
    is_public_proxy: Option<bool>,
    is_residential_proxy: Option<bool>,
    is_tor_exit_node: Option<bool>,
}

/// A lookup that found the address but could not decode its record.
#[derive(Debug, thiserror::Error)]
#[error("database lookup failed")]
pub struct LookupError(#[from] maxminddb::MaxMindDbError);

impl Db {
    pub fn open(path: &Path, kind: DbKind) -> Result<Db, DbError> {
        let bytes = std::fs::read(path).map_err(|source| DbError::Read { path: path.to_path_buf(), source })?;
        Db::from_bytes(bytes, path, kind)
    }

    pub fn from_bytes(bytes: Vec<u8>, path: &Path, kind: DbKind) -> Result<Db, DbError> {
        let reader = Reader::from_source(bytes).map_err(|source| DbError::Corrupt { path: path.to_path_buf(), source })?;
        let found = reader.metadata().database_type.clone();
        if !kind.accepts(&found) {
            return Err(DbError::WrongType { path: path.to_path_buf(), kind, found });
        }
        Ok(Db { reader, path: path.to_path_buf(), kind })
    }

    /// Seconds since the epoch when the database was built.
    pub fn build_epoch(&self) -> u64 {
        self.reader.metadata().build_epoch
    }

    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    pub fn asn(&self, ip: IpAddr) -> Result<(Option<Asn>, Option<Arc<str>>), LookupError> {
        let rec: Option<AsnRecord<'_>> = self.reader.lookup(ip)?.decode()?;
        Ok(match rec {
            Some(r) => (r.autonomous_system_number.map(Asn), r.autonomous_system_organization.map(Arc::from)),
            None => (None, None),
        })
    }

    pub fn geo(&self, ip: IpAddr) -> Result<(Option<Country>, Option<Coordinates>), LookupError> {
        let Some(rec) = self.reader.lookup(ip)?.decode::<GeoRecord<'_>>()? else {
            return Ok((None, None));
        };
        let country = rec
            .country
            .and_then(|c| c.iso_code)
            .or(rec.registered_country.and_then(|c| c.iso_code))
            .and_then(Country::new);
        let coords = rec.location.and_then(|l| {
            Some(Coordinates {
                latitude: l.latitude? as f32,
                longitude: l.longitude? as f32,
                // A missing radius is treated as very uncertain, never as exact.
                accuracy_km: l.accuracy_radius.unwrap_or(1000),
            })
        });
        Ok((country, coords))
    }

    /// The Anonymous-IP database's verdict, most specific flag first.
    pub fn anonymous(&self, ip: IpAddr) -> Result<Option<Category>, LookupError> {
        let r: AnonymousRecord = self.reader.lookup(ip)?.decode()?.unwrap_or_default();
        let flag = |f: Option<bool>| f == Some(true);
        Ok(if flag(r.is_tor_exit_node) {
            Some(Category::Tor)
        } else if flag(r.is_anonymous_vpn) {
            Some(Category::Vpn)
        } else if flag(r.is_public_proxy) || flag(r.is_residential_proxy) {
            Some(Category::Proxy)
        } else if flag(r.is_hosting_provider) {
            Some(Category::Hosting)
        } else {
            None
        })
    }
}
