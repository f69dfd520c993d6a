//! The server over real sockets on 127.0.0.1, with a second server as the
//! upstream resolver.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use tokio::net::{TcpStream, UdpSocket};

use super::*;
use crate::forward::{read_framed, write_framed};

/// A safety net so a broken server fails the test instead of hanging it.
const GIVE_UP: Duration = Duration::from_secs(20);

fn service(ns: &str, name: &str, spec: &serde_json::Value) -> Service {
    serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
        .expect("test service")
}

fn headless_with(n: u8) -> (Service, EndpointSlice) {
    let endpoints: Vec<_> = (1..=n)
        .map(|i| json!({"addresses": [format!("10.244.{}.{}", i / 200, i % 200 + 1)]}))
        .collect();
    let slice = serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "big-1",
                     "labels": {"kubernetes.io/service-name": "big"}},
        "addressType": "IPv4",
        "endpoints": endpoints,
    }))
    .expect("test slice");
    (
        service("default", "big", &json!({"clusterIP": "None"})),
        slice,
    )
}

async fn start(
    domain: &str,
    services: &[Service],
    slices: &[EndpointSlice],
    upstreams: Vec<SocketAddr>,
) -> (SocketAddr, RecordsHandle) {
    let records = Records::build(domain, services, slices).expect("records");
    let server = DnsServer::bind(
        ServerConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            upstreams,
            forward_timeout: Duration::from_millis(300),
        },
        records,
    )
    .await
    .expect("bind");
    let addr = server.local_addr();
    let handle = server.records();
    tokio::spawn(server.run());
    (addr, handle)
}

fn question(name: &str, qtype: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    m
}

async fn udp(server: SocketAddr, m: &Message) -> anyhow::Result<Message> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.send_to(&m.to_vec()?, server).await?;
    let mut buf = vec![0; 65_535];
    let n = tokio::time::timeout(GIVE_UP, socket.recv(&mut buf)).await??;
    let reply = Message::from_vec(&buf[..n])?;
    anyhow::ensure!(
        reply.metadata.id == m.metadata.id,
        "reply to another question"
    );
    Ok(reply)
}

async fn tcp(server: SocketAddr, m: &Message) -> anyhow::Result<Message> {
    let mut stream = TcpStream::connect(server).await?;
    write_framed(&mut stream, &m.to_vec()?).await?;
    let bytes = tokio::time::timeout(GIVE_UP, read_framed(&mut stream)).await??;
    Ok(Message::from_vec(&bytes)?)
}

fn addresses(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(A(ip)) => Some(ip.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn answers_cluster_names_over_udp_and_tcp() -> anyhow::Result<()> {
    let web = service("default", "web", &json!({"clusterIP": "10.96.0.20"}));
    let (addr, _) = start("cluster.local", &[web], &[], Vec::new()).await;
    let q = question("Web.Default.svc.cluster.local.", RecordType::A);
    for reply in [udp(addr, &q).await?, tcp(addr, &q).await?] {
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert!(reply.metadata.authoritative);
        assert_eq!(addresses(&reply), vec!["10.96.0.20"]);
        // The answer carries the question's spelling.
        assert_eq!(
            reply.answers[0].name.to_ascii(),
            "Web.Default.svc.cluster.local."
        );
    }
    let nx = udp(
        addr,
        &question("nope.default.svc.cluster.local.", RecordType::A),
    )
    .await?;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(matches!(
        nx.authorities.first().map(|r| &r.data),
        Some(RData::SOA(_))
    ));
    let nodata = udp(
        addr,
        &question("web.default.svc.cluster.local.", RecordType::AAAA),
    )
    .await?;
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert_eq!(nodata.authorities.len(), 1);
    Ok(())
}

#[tokio::test]
async fn new_records_are_answered_once_set() -> anyhow::Result<()> {
    let (addr, handle) = start("cluster.local", &[], &[], Vec::new()).await;
    let q = question("web.default.svc.cluster.local.", RecordType::A);
    assert_eq!(
        udp(addr, &q).await?.metadata.response_code,
        ResponseCode::NXDomain
    );
    let web = service("default", "web", &json!({"clusterIP": "10.96.0.21"}));
    handle.set(Records::build("cluster.local", [&web], [])?);
    assert_eq!(addresses(&udp(addr, &q).await?), vec!["10.96.0.21"]);
    Ok(())
}

#[tokio::test]
async fn other_names_are_forwarded_to_the_upstream() -> anyhow::Result<()> {
    // The upstream: a second server, authoritative for `upstream.test`.
    let www = service("corp", "www", &json!({"clusterIP": "192.0.2.1"}));
    let (upstream, _) = start("upstream.test", &[www], &[], Vec::new()).await;
    // A dead upstream first: a port nobody listens on refuses at once.
    let dead = UdpSocket::bind("127.0.0.1:0").await?.local_addr()?;
    let (addr, _) = start("cluster.local", &[], &[], vec![dead, upstream]).await;
    let q = question("www.corp.svc.upstream.test.", RecordType::A);
    for reply in [udp(addr, &q).await?, tcp(addr, &q).await?] {
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(addresses(&reply), vec!["192.0.2.1"]);
    }
    let nx = udp(addr, &question("nope.upstream.test.", RecordType::A)).await?;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    Ok(())
}

#[tokio::test]
async fn no_or_silent_upstreams_answer_servfail() -> anyhow::Result<()> {
    let q = question("example.com.", RecordType::A);
    let (none, _) = start("cluster.local", &[], &[], Vec::new()).await;
    assert_eq!(
        udp(none, &q).await?.metadata.response_code,
        ResponseCode::ServFail
    );
    assert_eq!(
        tcp(none, &q).await?.metadata.response_code,
        ResponseCode::ServFail
    );
    // An upstream that takes the question and never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").await?;
    let (addr, _) = start("cluster.local", &[], &[], vec![silent.local_addr()?]).await;
    let reply = udp(addr, &q).await?;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(reply.queries, q.queries);
    let mut buf = [0; 512];
    assert!(
        silent.try_recv(&mut buf).is_ok(),
        "the question never reached the upstream"
    );
    Ok(())
}

#[tokio::test]
async fn large_answers_are_truncated_over_udp_and_whole_over_tcp() -> anyhow::Result<()> {
    let (svc, slice) = headless_with(100);
    let (addr, _) = start("cluster.local", &[svc], &[slice], Vec::new()).await;
    let q = question("big.default.svc.cluster.local.", RecordType::A);
    let cut = udp(addr, &q).await?;
    assert!(cut.metadata.truncation);
    assert!(cut.answers.is_empty());
    let whole = tcp(addr, &q).await?;
    assert!(!whole.metadata.truncation);
    assert_eq!(addresses(&whole).len(), 100);
    Ok(())
}

#[tokio::test]
async fn garbage_gets_formerr() -> anyhow::Result<()> {
    let (addr, _) = start("cluster.local", &[], &[], Vec::new()).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.send_to(&[0x12, 0x34, 0xff], addr).await?;
    let mut buf = vec![0; 512];
    let n = tokio::time::timeout(GIVE_UP, socket.recv(&mut buf)).await??;
    let reply = Message::from_vec(&buf[..n])?;
    assert_eq!(reply.metadata.id, 0x1234);
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    Ok(())
}
