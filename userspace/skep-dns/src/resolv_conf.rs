//! The parts of a resolv.conf(5) that DNS forwarding and pods' resolv.conf
//! need: nameservers, search domains and options, read like the kubelet does.

use std::net::{IpAddr, SocketAddr};

/// A parsed resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines, in order.
    pub nameservers: Vec<IpAddr>,
    /// The last `search` line's domains, trailing dots trimmed, `.` dropped.
    pub searches: Vec<String>,
    /// Every `options` word (`ndots:5`, `edns0`), in order.
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Parses resolv.conf text; lines it does not know (and nameservers that
    /// are not IP addresses) are skipped, as the C library does.
    pub fn parse(text: &str) -> Self {
        let mut conf = Self::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(ip) = words.next().and_then(|w| w.parse().ok()) {
                        conf.nameservers.push(ip);
                    }
                }
                Some("search") => {
                    conf.searches = words
                        .filter(|w| *w != ".")
                        .map(|w| w.trim_end_matches('.').to_owned())
                        .collect();
                }
                Some("options") => conf.options.extend(words.map(str::to_owned)),
                _ => {}
            }
        }
        conf
    }

    /// Reads and parses `path`; a missing or unreadable file is an empty
    /// configuration (a node without resolvers).
    pub fn read(path: &std::path::Path) -> Self {
        std::fs::read_to_string(path)
            .map(|t| Self::parse(&t))
            .unwrap_or_default()
    }

    /// The nameservers as port-53 addresses to forward to, leaving out
    /// `exclude` (the DNS server's own addresses: forwarding to itself would
    /// loop).
    pub fn upstreams(&self, exclude: &[IpAddr]) -> Vec<SocketAddr> {
        self.nameservers
            .iter()
            .filter(|ip| !exclude.contains(ip))
            .map(|ip| SocketAddr::new(*ip, 53))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn parses_nameservers_searches_and_options() {
        let conf = ResolvConf::parse(
            "# generated\nnameserver 10.0.0.2\nnameserver bogus\nsearch old.example\nsearch corp.example. . lab.example\noptions ndots:2 edns0 ; comment\nnameserver 10.0.0.3 # second\ndomain ignored.example\n",
        );
        assert_eq!(
            conf.nameservers,
            vec![
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3))
            ]
        );
        assert_eq!(conf.searches, vec!["corp.example", "lab.example"]);
        assert_eq!(conf.options, vec!["ndots:2", "edns0"]);
    }

    #[test]
    fn upstreams_leave_out_the_server_itself() {
        let conf = ResolvConf::parse("nameserver 10.0.0.2\nnameserver 10.96.0.10\n");
        let upstreams = conf.upstreams(&[IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10))]);
        assert_eq!(upstreams, vec![SocketAddr::from(([10, 0, 0, 2], 53))]);
        assert!(
            ResolvConf::read(std::path::Path::new("/nonexistent/resolv.conf"))
                == ResolvConf::default()
        );
    }
}
