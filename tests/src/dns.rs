//! A minimal DNS client over real UDP and TCP, with EDNS Client Subnet, for end-to-end tests.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
pub use hickory_proto::rr::RecordType;
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RData};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a test needs from a DNS answer.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The response code.
    pub rcode: ResponseCode,
    /// A and AAAA addresses in the answer section, in order.
    pub addresses: Vec<IpAddr>,
    /// The TTL of the first answer record.
    pub ttl: Option<u32>,
    /// The ECS scope prefix echoed by the server, if any.
    pub ecs_scope: Option<u8>,
    /// Whether the AA bit was set.
    pub authoritative: bool,
    /// The whole message.
    pub message: Message,
}

/// Builds a query for `name`/`rtype`, with an ECS option when `subnet` is `Some("198.51.100.0/24")`.
pub fn query_message(name: &str, rtype: RecordType, subnet: Option<&str>) -> Message {
    let mut message = Message::query();
    message.add_query(Query::query(
        Name::from_str(name).expect("query name"),
        rtype,
    ));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    if let Some(subnet) = subnet {
        let (addr, prefix) = subnet.split_once('/').expect("subnet a.b.c.d/n");
        let addr: IpAddr = addr.parse().expect("subnet address");
        let prefix: u8 = prefix.parse().expect("subnet prefix");
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(addr, prefix, 0)));
    }
    message.set_edns(edns);
    message
}

/// Sends `message` over UDP to `server` and returns the parsed answer.
pub async fn udp(server: SocketAddr, message: &Message) -> Result<Answer, String> {
    let bind: SocketAddr = if server.is_ipv4() {
        "127.0.0.1:0".parse().expect("addr")
    } else {
        "[::1]:0".parse().expect("addr")
    };
    let socket = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| e.to_string())?;
    let bytes = message.to_vec().map_err(|e| e.to_string())?;
    socket
        .send_to(&bytes, server)
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65535];
    let len = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
        .await
        .map_err(|_| format!("no UDP answer from {server} within 2s"))?
        .map_err(|e| e.to_string())?;
    parse(&buf[..len])
}

/// Sends `message` over TCP (2-byte length framing) and returns the parsed answer.
pub async fn tcp(server: SocketAddr, message: &Message) -> Result<Answer, String> {
    let bytes = message.to_vec().map_err(|e| e.to_string())?;
    let run = async {
        let mut stream = tokio::net::TcpStream::connect(server)
            .await
            .map_err(|e| e.to_string())?;
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await.map_err(|e| e.to_string())?;
        let mut len = [0u8; 2];
        stream
            .read_exact(&mut len)
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        stream
            .read_exact(&mut buf)
            .await
            .map_err(|e| e.to_string())?;
        parse(&buf)
    };
    tokio::time::timeout(Duration::from_secs(2), run)
        .await
        .map_err(|_| format!("no TCP answer from {server} within 2s"))?
}

/// Queries `name` A over UDP from the given client subnet and returns the addresses.
pub async fn a_from_subnet(server: SocketAddr, name: &str, subnet: &str) -> Result<Answer, String> {
    udp(server, &query_message(name, RecordType::A, Some(subnet))).await
}

fn parse(bytes: &[u8]) -> Result<Answer, String> {
    let message = Message::from_vec(bytes).map_err(|e| e.to_string())?;
    let addresses = message
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .collect();
    let ecs_scope = message
        .edns
        .as_ref()
        .and_then(|edns| match edns.option(EdnsCode::Subnet) {
            Some(EdnsOption::Subnet(subnet)) => Some(subnet.scope_prefix()),
            _ => None,
        });
    Ok(Answer {
        rcode: message.metadata.response_code,
        ttl: message.answers.first().map(|r| r.ttl),
        addresses,
        ecs_scope,
        authoritative: message.metadata.authoritative,
        message,
    })
}
