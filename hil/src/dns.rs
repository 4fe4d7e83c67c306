//! The LAN's name server (192.0.2.1:53, UDP): authoritative answers for the test zones, built
//! with hickory-proto's wire format. It answers A, MX, PTR and TXT from a fixed record list;
//! a name it knows with no record of the asked type gets an empty NOERROR answer, a name inside
//! its zones it does not know gets NXDOMAIN, and anything outside them REFUSED (it is no
//! recursive resolver: the box has no internet here).

use std::net::Ipv4Addr;
use std::str::FromStr;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, MX, PTR, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// Time to live of every answer: short, so a re-run never sees stale data.
const TTL: u32 = 60;

/// The records the name server answers from.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    origins: Vec<Name>,
    records: Vec<(Name, RData)>,
}

impl Zone {
    /// An empty zone set.
    pub fn new() -> Zone {
        Zone::default()
    }

    /// Declares `origin` (e.g. `example.org`) as a zone this server is authoritative for.
    pub fn origin(mut self, origin: &str) -> Zone {
        self.origins.push(name(origin));
        self
    }

    /// Adds `owner A addr`.
    pub fn a(mut self, owner: &str, addr: Ipv4Addr) -> Zone {
        self.records.push((name(owner), RData::A(A(addr))));
        self
    }

    /// Adds `owner MX preference exchange`.
    pub fn mx(mut self, owner: &str, preference: u16, exchange: &str) -> Zone {
        self.records
            .push((name(owner), RData::MX(MX::new(preference, name(exchange)))));
        self
    }

    /// Adds the PTR record for `addr` (under `in-addr.arpa`) pointing at `target`.
    pub fn ptr(mut self, addr: Ipv4Addr, target: &str) -> Zone {
        let o = addr.octets();
        let owner = format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0]);
        self.records
            .push((name(&owner), RData::PTR(PTR(name(target)))));
        self
    }

    /// Adds `owner TXT text`.
    pub fn txt(mut self, owner: &str, text: &str) -> Zone {
        self.records
            .push((name(owner), RData::TXT(TXT::new(vec![text.to_string()]))));
        self
    }

    /// Lists `addr` in the DNS blocklist zone `list` (`d.c.b.a.list A 127.0.0.2` and a TXT
    /// reason), the way RBLs publish.
    pub fn rbl_listing(self, list: &str, addr: Ipv4Addr, reason: &str) -> Zone {
        let o = addr.octets();
        let owner = format!("{}.{}.{}.{}.{list}", o[3], o[2], o[1], o[0]);
        self.a(&owner, Ipv4Addr::new(127, 0, 0, 2))
            .txt(&owner, reason)
    }

    /// Answers one query datagram. `None` for datagrams that are not a parseable query (they
    /// are dropped, as a real server would).
    pub fn answer(&self, query: &[u8]) -> Option<Vec<u8>> {
        let request = Message::from_vec(query).ok()?;
        if request.message_type() != MessageType::Query {
            return None;
        }
        let mut response = Message::new();
        response
            .set_id(request.id())
            .set_message_type(MessageType::Response)
            .set_op_code(request.op_code())
            .set_recursion_desired(request.recursion_desired())
            .set_recursion_available(false);
        let Some(q) = request.queries().first() else {
            response.set_response_code(ResponseCode::FormErr);
            return response.to_vec().ok();
        };
        response.add_query(q.clone());
        if request.op_code() != OpCode::Query || request.queries().len() != 1 {
            response.set_response_code(ResponseCode::NotImp);
            return response.to_vec().ok();
        }
        let qname = q.name().to_lowercase();
        let Some(origin) = self.origins.iter().find(|o| o.zone_of(&qname)) else {
            response.set_response_code(ResponseCode::Refused);
            return response.to_vec().ok();
        };
        response.set_authoritative(true);
        let owned: Vec<&RData> = self
            .records
            .iter()
            .filter(|(n, _)| *n == qname)
            .map(|(_, r)| r)
            .collect();
        let matching: Vec<&RData> = owned
            .iter()
            .copied()
            .filter(|r| q.query_type() == RecordType::ANY || r.record_type() == q.query_type())
            .collect();
        for rdata in &matching {
            response.add_answer(Record::from_rdata(q.name().clone(), TTL, (*rdata).clone()));
        }
        if matching.is_empty() {
            // Negative answers carry the zone's SOA so resolvers can cache them (RFC 2308).
            let soa = SOA::new(
                name(&format!("ns.{origin}")),
                name(&format!("hostmaster.{origin}")),
                1,
                3600,
                600,
                86400,
                TTL,
            );
            response.add_name_server(Record::from_rdata(origin.clone(), TTL, RData::SOA(soa)));
        } else {
            // Give the addresses of MX hosts too, so one query is enough.
            for rdata in &matching {
                if let RData::MX(mx) = rdata {
                    let exchange = mx.exchange().to_lowercase();
                    for (n, r) in &self.records {
                        if *n == exchange && r.record_type() == RecordType::A {
                            response.add_additional(Record::from_rdata(n.clone(), TTL, r.clone()));
                        }
                    }
                }
            }
        }
        response.set_response_code(if owned.is_empty() {
            ResponseCode::NXDomain
        } else {
            ResponseCode::NoError
        });
        response.to_vec().ok()
    }
}

/// A fully qualified, lower-case name; the zone is built from constants, so a bad one is a bug.
fn name(s: &str) -> Name {
    let mut n = Name::from_str(s).unwrap_or_else(|e| panic!("bad DNS name {s:?}: {e}"));
    n.set_fqdn(true);
    n.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;

    fn zone() -> Zone {
        Zone::new()
            .origin("example.org")
            .origin("2.0.192.in-addr.arpa")
            .origin("dnsbl.example.net")
            .mx("example.org", 10, "mail.example.org")
            .a("mail.example.org", Ipv4Addr::new(192, 0, 2, 25))
            .ptr(Ipv4Addr::new(192, 0, 2, 101), "sender1.example.net")
            .rbl_listing(
                "dnsbl.example.net",
                Ipv4Addr::new(192, 0, 2, 120),
                "listed for tests",
            )
    }

    fn ask(zone: &Zone, qname: &str, qtype: RecordType) -> Message {
        let mut m = Message::new();
        m.set_id(4242).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_str(qname).unwrap(), qtype));
        Message::from_vec(&zone.answer(&m.to_vec().unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn mx_queries_get_the_exchange_and_its_address() {
        let r = ask(&zone(), "Example.ORG.", RecordType::MX);
        assert_eq!(r.id(), 4242);
        assert_eq!(r.message_type(), MessageType::Response);
        assert!(r.authoritative());
        assert_eq!(r.response_code(), ResponseCode::NoError);
        match r.answers()[0].data() {
            Some(RData::MX(mx)) => {
                assert_eq!(mx.preference(), 10);
                assert_eq!(mx.exchange().to_ascii(), "mail.example.org.");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.additionals().len(), 1);
    }

    #[test]
    fn a_ptr_and_rbl_lookups_are_answered() {
        let z = zone();
        let a = ask(&z, "mail.example.org", RecordType::A);
        assert_eq!(
            a.answers()[0].data(),
            Some(&RData::A(A(Ipv4Addr::new(192, 0, 2, 25))))
        );
        let p = ask(&z, "101.2.0.192.in-addr.arpa", RecordType::PTR);
        assert_eq!(p.answers().len(), 1);
        let listed = ask(&z, "120.2.0.192.dnsbl.example.net", RecordType::A);
        assert_eq!(
            listed.answers()[0].data(),
            Some(&RData::A(A(Ipv4Addr::new(127, 0, 0, 2))))
        );
        let clean = ask(&z, "101.2.0.192.dnsbl.example.net", RecordType::A);
        assert_eq!(clean.response_code(), ResponseCode::NXDomain);
    }

    #[test]
    fn known_names_without_the_type_get_an_empty_answer_with_the_soa() {
        let r = ask(&zone(), "mail.example.org", RecordType::AAAA);
        assert_eq!(r.response_code(), ResponseCode::NoError);
        assert!(r.answers().is_empty());
        assert_eq!(r.name_servers()[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn names_outside_the_zones_are_refused_and_garbage_is_dropped() {
        let r = ask(&zone(), "www.example.com", RecordType::A);
        assert_eq!(r.response_code(), ResponseCode::Refused);
        assert!(zone().answer(b"\x00\x01garbage").is_none());
    }
}
