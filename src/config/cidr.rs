//! CIDR lists (`proxy_protocol_from`, admin `allow`): parsed once when the file is loaded
//! (`Parsed`), so a bad entry is a config error with its key path and the hot path only matches.

use super::parsed::{FromConfigText, Parsed};
use ipnet::IpNet;
use std::net::IpAddr;

pub type Cidr = Parsed<IpNet>;

impl FromConfigText for IpNet {
    fn from_config_text(text: &str) -> Result<Self, String> {
        let text = text.trim();
        // A bare address is the one host: "10.0.0.5" reads as "10.0.0.5/32".
        text.parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| {
                format!("`{text}` is not a CIDR; write it like \"10.0.0.0/8\" or \"127.0.0.1/32\"")
            })
    }
}

/// Whether `ip` is inside one of the networks. An IPv4 client on a dual-stack listener shows up
/// as `::ffff:a.b.c.d`; it is matched as the IPv4 address it is.
pub fn contains(list: &[Cidr], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    list.iter()
        .any(|c| c.value().is_ok_and(|net| net.contains(&ip)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_networks_and_bare_addresses() {
        let list: Vec<Cidr> = ["10.0.0.0/8", "192.168.1.7", "::1/128"]
            .into_iter()
            .map(Cidr::from)
            .collect();
        assert!(contains(&list, "10.2.3.4".parse().unwrap()));
        assert!(contains(&list, "192.168.1.7".parse().unwrap()));
        assert!(!contains(&list, "192.168.1.8".parse().unwrap()));
        assert!(contains(&list, "::ffff:10.9.9.9".parse().unwrap()));
        assert!(contains(&list, "::1".parse().unwrap()));
        assert!(Cidr::from("10.0.0.0/33").value().is_err());
        assert!(Cidr::from("corp.example").value().is_err());
    }
}
