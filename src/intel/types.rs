//! The small values intel produces: ASN, country, coordinates, network category.

use std::fmt;
use std::str::FromStr;

/// An autonomous system number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Asn(pub u32);

impl fmt::Display for Asn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AS{}", self.0)
    }
}

impl FromStr for Asn {
    type Err = std::num::ParseIntError;

    /// `AS60068` or `as60068`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.strip_prefix("AS").or_else(|| s.strip_prefix("as")).unwrap_or("\u{0}");
        digits.parse().map(Asn)
    }
}

/// An ISO 3166-1 alpha-2 country code.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Country([u8; 2]);

impl Country {
    /// Two ASCII letters, upper-cased; anything else is not a country.
    pub fn new(code: &str) -> Option<Country> {
        match code.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some(Country([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        // invariant: `new` admits ASCII letters only.
        std::str::from_utf8(&self.0).expect("country code is ASCII")
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Country({})", self.as_str())
    }
}

/// Where an address is, and how sure the database is (67 % confidence radius).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coordinates {
    pub latitude: f32,
    pub longitude: f32,
    pub accuracy_km: u16,
}

crate::labels::labels! {
    /// What kind of network an address belongs to.
    pub enum Category {
        Vpn = "vpn",
        Hosting = "hosting",
        Tor = "tor",
        Proxy = "proxy",
        /// iCloud Private Relay and the like: privacy for ordinary users, not an anonymizer.
        PrivacyRelay = "privacy_relay",
        /// The organisation's own egress (office, corporate VPN).
        Corporate = "corporate",
        Other = "other",
    }
}

impl Category {
    /// VPN, hosting, Tor and proxy networks hide who is behind them.
    pub fn is_anonymizer(self) -> bool {
        matches!(self, Category::Vpn | Category::Hosting | Category::Tor | Category::Proxy)
    }
}

crate::labels::labels! {
    /// Which rule decided an address's category (for operators asking "why?").
    pub enum CategorySource {
        /// `[intel.allow]`: corporate egress or privacy relay ranges.
        Allowlist = "allowlist",
        /// `[intel.networks]`: the operator's own category lists.
        OperatorList = "operator_list",
        /// The GeoIP2-Anonymous-IP database's flags.
        AnonymousIpDb = "anonymous_ip_db",
        /// tether's built-in catalogue of networks by ASN.
        Catalogue = "catalogue",
        /// Nothing matched.
        Default = "default",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asn_and_country_forms() {
        assert_eq!("AS60068".parse::<Asn>().unwrap(), Asn(60068));
        assert_eq!("as9009".parse::<Asn>().unwrap(), Asn(9009));
        assert!("60068".parse::<Asn>().is_err());
        assert!("ASx".parse::<Asn>().is_err());
        assert_eq!(Asn(60068).to_string(), "AS60068");
        assert_eq!(Country::new("se").unwrap().as_str(), "SE");
        assert!(Country::new("SWE").is_none());
        assert!(Country::new("1A").is_none());
    }

    #[test]
    fn anonymizers_are_exactly_four() {
        let anon: Vec<_> = Category::ALL.into_iter().filter(|c| c.is_anonymizer()).collect();
        assert_eq!(anon, vec![Category::Vpn, Category::Hosting, Category::Tor, Category::Proxy]);
        for c in Category::ALL {
            assert_eq!(Category::parse(c.as_str()), Some(c));
        }
    }
}
