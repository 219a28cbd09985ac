//! Addresses trusted to have terminated TLS in front of the plain-HTTP listener (Kong's
//! `trusted_ips`), as CIDR blocks.

use std::net::IpAddr;

/// A list of CIDR blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedIps(Vec<(IpAddr, u8)>);

impl TrustedIps {
    /// Parses `10.0.0.0/8,::1/128`; a bare address is a single host.
    pub fn parse(list: &[String]) -> Result<Self, String> {
        let mut blocks = Vec::new();
        for item in list
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let (addr, bits) = match item.split_once('/') {
                Some((addr, bits)) => (addr, Some(bits)),
                None => (item, None),
            };
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("`{item}` is not an IP address or CIDR block"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                None => max,
                Some(b) => b
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| format!("`{item}` has a prefix length outside 0..={max}"))?,
            };
            blocks.push((addr, bits));
        }
        Ok(Self(blocks))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|(net, bits)| match (net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), *bits),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), *bits),
            _ => false,
        })
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = usize::from(bits / 8);
    let rest = bits % 8;
    if a[..full] != b[..full] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[full] & mask == b[full] & mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(list: &str) -> TrustedIps {
        TrustedIps::parse(&[list.to_owned()]).unwrap()
    }

    #[test]
    fn blocks_match_their_addresses_only() {
        let t = trusted("127.0.0.0/8, 10.1.0.0/16,::1,192.168.1.128/25");
        assert!(t.contains("127.4.5.6".parse().unwrap()));
        assert!(t.contains("10.1.200.3".parse().unwrap()));
        assert!(!t.contains("10.2.0.1".parse().unwrap()));
        assert!(t.contains("::1".parse().unwrap()));
        assert!(t.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(t.contains("192.168.1.200".parse().unwrap()));
        assert!(!t.contains("192.168.1.100".parse().unwrap()));
        assert!(!TrustedIps::default().contains("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn bad_blocks_are_named() {
        assert!(
            TrustedIps::parse(&["10.0.0.0/33".into()])
                .unwrap_err()
                .contains("10.0.0.0/33")
        );
        assert!(
            TrustedIps::parse(&["nope".into()])
                .unwrap_err()
                .contains("nope")
        );
    }
}
