//! `tether lookup`: what tether knows about an address, and why.

use std::net::IpAddr;

use serde::Serialize;

use super::Intel;

/// One address as `tether lookup --json` prints it.
#[derive(Debug, Serialize)]
pub struct LookupReport {
    pub ip: String,
    pub asn: Option<u32>,
    pub asn_org: Option<String>,
    pub country: Option<String>,
    pub latitude: Option<f32>,
    pub longitude: Option<f32>,
    pub accuracy_radius_km: Option<u16>,
    pub category: &'static str,
    pub anonymizer: bool,
    /// Which rule decided the category.
    pub category_source: &'static str,
    /// Every matching IoC entry, as written in its file.
    pub ioc: Vec<String>,
    /// The labels of the IoC files those entries come from.
    pub ioc_lists: Vec<String>,
}

pub fn report(intel: &Intel, ip: IpAddr) -> LookupReport {
    let ip = ip.to_canonical();
    let info = intel.lookup_uncached(ip);
    let matches = intel.ioc_matches(ip, info.asn);
    let mut ioc_lists: Vec<String> = matches.iter().map(|m| m.label.clone()).collect();
    ioc_lists.sort();
    ioc_lists.dedup();
    LookupReport {
        ip: ip.to_string(),
        asn: info.asn.map(|a| a.0),
        asn_org: info.org.as_deref().map(str::to_owned),
        country: info.country.map(|c| c.as_str().to_owned()),
        latitude: info.location.map(|l| l.latitude),
        longitude: info.location.map(|l| l.longitude),
        accuracy_radius_km: info.location.map(|l| l.accuracy_km),
        category: info.category.as_str(),
        anonymizer: info.anonymizer(),
        category_source: info.source.as_str(),
        ioc: matches.into_iter().map(|m| m.entry).collect(),
        ioc_lists,
    }
}

impl LookupReport {
    /// The human-readable form: one line per fact.
    pub fn to_text(&self) -> String {
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
        let mut out = format!(
            "{}\n  asn:        {}\n  org:        {}\n  country:    {}\n  location:   {}\n  category:   {} ({}; decided by {})\n",
            self.ip,
            or_dash(self.asn.map(|a| format!("AS{a}"))),
            or_dash(self.asn_org.clone()),
            or_dash(self.country.clone()),
            or_dash(self.latitude.zip(self.longitude).map(|(la, lo)| {
                format!("{la:.4}, {lo:.4} (±{} km)", self.accuracy_radius_km.unwrap_or(0))
            })),
            self.category,
            if self.anonymizer { "anonymizer" } else { "not an anonymizer" },
            self.category_source,
        );
        if self.ioc.is_empty() {
            out.push_str("  ioc:        none\n");
        } else {
            out.push_str(&format!("  ioc:        {} (lists: {})\n", self.ioc.join(", "), self.ioc_lists.join(", ")));
        }
        out
    }
}
