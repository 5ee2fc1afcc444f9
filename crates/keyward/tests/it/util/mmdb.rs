//! A tiny MaxMind DB (MMDB v2) writer, so the enrichment tests build their
//! own databases: IPv4 only, 24-bit records, the data types GeoLite2
//! Country and ASN records use.

use std::net::Ipv4Addr;
use std::path::Path;

/// A value of the MaxMind DB data section.
pub enum V {
    Str(&'static str),
    U16(u16),
    U32(u32),
    U64(u64),
    Map(Vec<(&'static str, V)>),
    Array(Vec<V>),
}

fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    let (low, extra): (u8, Vec<u8>) = match size {
        0..=28 => (size as u8, vec![]),
        29..=284 => (29, vec![(size - 29) as u8]),
        285..=65_820 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
        _ => (31, ((size - 65_821) as u32).to_be_bytes()[1..].to_vec()),
    };
    if kind <= 7 {
        out.push((kind << 5) | low);
    } else {
        out.push(low);
        out.push(kind - 7);
    }
    out.extend(extra);
}

fn uint(out: &mut Vec<u8>, kind: u8, v: u64, width: usize) {
    let bytes = v.to_be_bytes();
    let significant: Vec<u8> = bytes[8 - width..].iter().copied().skip_while(|b| *b == 0).collect();
    control(out, kind, significant.len());
    out.extend(significant);
}

fn encode(v: &V, out: &mut Vec<u8>) {
    match v {
        V::Str(s) => {
            control(out, 2, s.len());
            out.extend(s.as_bytes());
        }
        V::U16(n) => uint(out, 5, u64::from(*n), 2),
        V::U32(n) => uint(out, 6, u64::from(*n), 4),
        V::U64(n) => uint(out, 9, *n, 8),
        V::Map(pairs) => {
            control(out, 7, pairs.len());
            for (k, v) in pairs {
                encode(&V::Str(k), out);
                encode(v, out);
            }
        }
        V::Array(items) => {
            control(out, 11, items.len());
            for v in items {
                encode(v, out);
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Rec {
    Empty,
    Node(usize),
    Data(usize),
}

/// Writes a database of `database_type` mapping each IPv4 network to its record.
pub fn write(path: &Path, database_type: &'static str, networks: Vec<(Ipv4Addr, u8, V)>) {
    let mut data = Vec::new();
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty; 2]];
    for (addr, prefix, record) in networks {
        let offset = data.len();
        encode(&record, &mut data);
        let bits = u32::from(addr);
        let mut node = 0;
        for depth in 0..prefix {
            let bit = ((bits >> (31 - depth)) & 1) as usize;
            if depth + 1 == prefix {
                nodes[node][bit] = Rec::Data(offset);
            } else {
                node = match nodes[node][bit] {
                    Rec::Node(n) => n,
                    _ => {
                        nodes.push([Rec::Empty; 2]);
                        let n = nodes.len() - 1;
                        nodes[node][bit] = Rec::Node(n);
                        n
                    }
                };
            }
        }
    }
    let count = nodes.len();
    let value = |r: Rec| match r {
        Rec::Empty => count,
        Rec::Node(n) => n,
        Rec::Data(off) => count + 16 + off,
    };
    let mut file = Vec::new();
    for [left, right] in &nodes {
        file.extend(&(value(*left) as u32).to_be_bytes()[1..]);
        file.extend(&(value(*right) as u32).to_be_bytes()[1..]);
    }
    file.extend([0u8; 16]);
    file.extend(data);
    file.extend(b"\xAB\xCD\xEFMaxMind.com");
    let metadata = V::Map(vec![
        ("binary_format_major_version", V::U16(2)),
        ("binary_format_minor_version", V::U16(0)),
        ("build_epoch", V::U64(1_800_000_000)),
        ("database_type", V::Str(database_type)),
        ("description", V::Map(vec![("en", V::Str("keyward test database"))])),
        ("ip_version", V::U16(4)),
        ("languages", V::Array(vec![V::Str("en")])),
        ("node_count", V::U32(count as u32)),
        ("record_size", V::U16(24)),
    ]);
    encode(&metadata, &mut file);
    std::fs::write(path, file).unwrap();
}
