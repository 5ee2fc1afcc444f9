//! IP enrichment from MaxMind-format databases (GeoLite2/GeoIP2 Country or
//! City, and ASN), when configured: the country and the autonomous system of
//! a source address, on usage events, in exports (ECS `source.geo.*`,
//! `source.as.*`) and for the rules engine (a key's first request from a new
//! country or network). The files are read into memory at start; a lookup
//! takes about a microsecond. Pseudonymized addresses (`anon:…`) are not looked up.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::{Reader, geoip2};
use serde::Deserialize;

/// The `[geoip]` section of the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeoConfig {
    /// A Country or City database (`GeoLite2-Country.mmdb`, `GeoIP2-City.mmdb`).
    pub country_db: Option<PathBuf>,
    /// An ASN database (`GeoLite2-ASN.mmdb`).
    pub asn_db: Option<PathBuf>,
}

/// What is known of an address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeoInfo {
    /// ISO 3166-1 alpha-2, e.g. `NL`.
    pub country: Option<String>,
    pub asn: Option<u32>,
    pub as_org: Option<String>,
}

/// The opened databases.
pub struct Geo {
    country: Option<Reader<Vec<u8>>>,
    asn: Option<Reader<Vec<u8>>>,
}

fn open(field: &str, path: &Path) -> Result<Reader<Vec<u8>>, String> {
    Reader::open_readfile(path).map_err(|e| format!("geoip.{field}: not a MaxMind database ({}: {e})", path.display()))
}

impl Geo {
    /// Opens what the config names; `None` when it names nothing.
    pub fn open(cfg: &GeoConfig) -> Result<Option<Geo>, String> {
        if cfg.country_db.is_none() && cfg.asn_db.is_none() {
            return Ok(None);
        }
        let country = cfg.country_db.as_deref().map(|p| open("country_db", p)).transpose()?;
        let asn = cfg.asn_db.as_deref().map(|p| open("asn_db", p)).transpose()?;
        Ok(Some(Geo { country, asn }))
    }

    /// The country and network of `ip` (a textual address), as far as known.
    pub fn lookup(&self, ip: &str) -> GeoInfo {
        let Ok(addr) = ip.parse::<IpAddr>() else { return GeoInfo::default() };
        let mut info = GeoInfo::default();
        if let Some(r) = &self.country
            && let Ok(found) = r.lookup(addr)
            && let Ok(Some(rec)) = found.decode::<geoip2::Country>()
        {
            info.country = rec.country.iso_code.map(str::to_owned);
        }
        if let Some(r) = &self.asn
            && let Ok(found) = r.lookup(addr)
            && let Ok(Some(rec)) = found.decode::<geoip2::Asn>()
        {
            info.asn = rec.autonomous_system_number;
            info.as_org = rec.autonomous_system_organization.map(str::to_owned);
        }
        info
    }
}

impl GeoConfig {
    /// Files that are not there. Whether they are MaxMind databases is known
    /// when they are opened, once, at start ([`Geo::open`]).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (field, path) in [("country_db", &self.country_db), ("asn_db", &self.asn_db)] {
            if let Some(path) = path
                && !path.is_file()
            {
                p.push(format!("geoip.{field}: {} is not a readable file", path.display()));
            }
        }
        p
    }
}
