//! Sets of IP traffic — protocols, and ports for TCP and UDP — with the set algebra the ACL
//! evaluation needs. Exact for what network ACL entries can express: a protocol number (or all
//! of them) and, for TCP and UDP, one port range.

use std::fmt;

/// IP protocol numbers that carry ports in network ACL entries.
pub(crate) const TCP: u8 = 6;
pub(crate) const UDP: u8 = 17;

/// A set of ports as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Ports(Vec<(u16, u16)>);

impl Ports {
    fn all() -> Ports {
        Ports(vec![(0, u16::MAX)])
    }

    fn range(from: u16, to: u16) -> Ports {
        if from <= to {
            Ports(vec![(from, to)])
        } else {
            Ports::default()
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn normalise(mut ranges: Vec<(u16, u16)>) -> Ports {
        ranges.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
        for (from, to) in ranges {
            match merged.last_mut() {
                Some(last) if u32::from(from) <= u32::from(last.1) + 1 => {
                    last.1 = last.1.max(to);
                }
                _ => merged.push((from, to)),
            }
        }
        Ports(merged)
    }

    fn union(&self, other: &Ports) -> Ports {
        Ports::normalise(self.0.iter().chain(&other.0).copied().collect())
    }

    fn intersect(&self, other: &Ports) -> Ports {
        let mut out = Vec::new();
        for &(a, b) in &self.0 {
            for &(c, d) in &other.0 {
                let (from, to) = (a.max(c), b.min(d));
                if from <= to {
                    out.push((from, to));
                }
            }
        }
        Ports::normalise(out)
    }

    fn subtract(&self, other: &Ports) -> Ports {
        let mut out = Vec::new();
        for &(a, b) in &self.0 {
            let mut pieces = vec![(a, b)];
            for &(c, d) in &other.0 {
                let mut next = Vec::new();
                for (from, to) in pieces {
                    if d < from || c > to {
                        next.push((from, to));
                        continue;
                    }
                    if c > from {
                        next.push((from, c - 1));
                    }
                    if d < to {
                        next.push((d + 1, to));
                    }
                }
                pieces = next;
            }
            out.extend(pieces);
        }
        Ports::normalise(out)
    }
}

/// A set of IP traffic.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Traffic {
    /// Protocols (other than TCP and UDP) in the set, whole: one bit per protocol number.
    protocols: [u64; 4],
    tcp: Ports,
    udp: Ports,
}

impl Traffic {
    /// Nothing.
    pub fn none() -> Traffic {
        Traffic::default()
    }

    /// Every protocol, every port.
    pub fn all() -> Traffic {
        let mut protocols = [u64::MAX; 4];
        clear_bit(&mut protocols, TCP);
        clear_bit(&mut protocols, UDP);
        Traffic {
            protocols,
            tcp: Ports::all(),
            udp: Ports::all(),
        }
    }

    /// One whole protocol (all ports when it has them).
    pub fn protocol(number: u8) -> Traffic {
        match number {
            TCP => Traffic {
                tcp: Ports::all(),
                ..Traffic::none()
            },
            UDP => Traffic {
                udp: Ports::all(),
                ..Traffic::none()
            },
            other => {
                let mut protocols = [0; 4];
                set_bit(&mut protocols, other);
                Traffic {
                    protocols,
                    ..Traffic::none()
                }
            }
        }
    }

    /// TCP or UDP on a port range.
    pub fn ports(number: u8, from: u16, to: u16) -> Traffic {
        match number {
            TCP => Traffic {
                tcp: Ports::range(from, to),
                ..Traffic::none()
            },
            UDP => Traffic {
                udp: Ports::range(from, to),
                ..Traffic::none()
            },
            other => Traffic::protocol(other),
        }
    }

    /// Nothing in the set.
    pub fn is_empty(&self) -> bool {
        self.protocols == [0; 4] && self.tcp.is_empty() && self.udp.is_empty()
    }

    /// Traffic in either set.
    pub fn union(&self, other: &Traffic) -> Traffic {
        Traffic {
            protocols: std::array::from_fn(|i| self.protocols[i] | other.protocols[i]),
            tcp: self.tcp.union(&other.tcp),
            udp: self.udp.union(&other.udp),
        }
    }

    /// Traffic in both sets.
    pub fn intersect(&self, other: &Traffic) -> Traffic {
        Traffic {
            protocols: std::array::from_fn(|i| self.protocols[i] & other.protocols[i]),
            tcp: self.tcp.intersect(&other.tcp),
            udp: self.udp.intersect(&other.udp),
        }
    }

    /// Traffic in this set and not in `other`.
    pub fn subtract(&self, other: &Traffic) -> Traffic {
        Traffic {
            protocols: std::array::from_fn(|i| self.protocols[i] & !other.protocols[i]),
            tcp: self.tcp.subtract(&other.tcp),
            udp: self.udp.subtract(&other.udp),
        }
    }

    /// Does the set hold this packet?
    pub fn contains(&self, protocol: u8, port: u16) -> bool {
        match protocol {
            TCP => self.tcp.0.iter().any(|&(a, b)| (a..=b).contains(&port)),
            UDP => self.udp.0.iter().any(|&(a, b)| (a..=b).contains(&port)),
            other => self.protocols[usize::from(other / 64)] & (1 << (other % 64)) != 0,
        }
    }

    /// One example packet of the set, for messages (`tcp/443`).
    pub fn example(&self) -> Option<String> {
        if let Some(&(from, _)) = self.tcp.0.first() {
            return Some(format!("tcp/{from}"));
        }
        if let Some(&(from, _)) = self.udp.0.first() {
            return Some(format!("udp/{from}"));
        }
        (0..=u8::MAX)
            .find(|&p| self.contains(p, 0))
            .map(|p| match p {
                1 => "icmp".to_string(),
                58 => "icmpv6".to_string(),
                other => format!("protocol {other}"),
            })
    }
}

fn set_bit(bits: &mut [u64; 4], n: u8) {
    bits[usize::from(n / 64)] |= 1 << (n % 64);
}

fn clear_bit(bits: &mut [u64; 4], n: u8) {
    bits[usize::from(n / 64)] &= !(1 << (n % 64));
}

impl fmt::Debug for Traffic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let others = (0..=u8::MAX)
            .filter(|&p| p != TCP && p != UDP && self.contains(p, 0))
            .count();
        write!(
            f,
            "Traffic(tcp {:?}, udp {:?}, {others} other protocols)",
            self.tcp.0, self.udp.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_algebra_on_ports_and_protocols() {
        let all = Traffic::all();
        let https = Traffic::ports(TCP, 443, 443);
        let rest = all.subtract(&https);
        assert!(!rest.contains(TCP, 443));
        assert!(rest.contains(TCP, 442) && rest.contains(TCP, 444) && rest.contains(UDP, 443));
        assert!(rest.contains(1, 0), "icmp stays");
        assert_eq!(rest.union(&https), all);
        assert!(rest.intersect(&https).is_empty());
        assert!(all.subtract(&all).is_empty());
        let ephemeral = Traffic::ports(TCP, 1024, 65535);
        assert_eq!(
            ephemeral.intersect(&Traffic::ports(TCP, 0, 2000)),
            Traffic::ports(TCP, 1024, 2000)
        );
        assert!(
            Traffic::ports(TCP, 10, 5).is_empty(),
            "an empty range is nothing"
        );
        assert_eq!(https.example().as_deref(), Some("tcp/443"));
        assert_eq!(Traffic::protocol(1).example().as_deref(), Some("icmp"));
    }

    #[test]
    fn adjacent_ranges_merge() {
        let a = Traffic::ports(UDP, 0, 99).union(&Traffic::ports(UDP, 100, 200));
        assert_eq!(a, Traffic::ports(UDP, 0, 200));
    }
}
