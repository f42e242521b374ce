//! Service discovery: a DNS server in shoal, one per realised swarm network,
//! listening (UDP and TCP, port 53) on this node's gateway address of that
//! network — so the address a query came in on says which network asked.
//!
//! Task containers (and `docker run --network <overlay>` containers) get
//! these gateways as their `Dns`, followed by the host's resolvers. The
//! engine's embedded DNS (127.0.0.11 in the container) forwards names it does
//! not know to them in order. On the asking network this server answers:
//! - `<service>` and each attachment alias: the service's VIP on the network
//!   (vip mode) or its serving tasks' addresses (dnsrr mode);
//! - `tasks.<service>`, `tasks.<alias>`: the serving tasks' addresses;
//! - `<service>.<slot>.<taskid>`: that task's address.
//!
//! Any other name gets REFUSED, which makes the engine's resolver ask the
//! next server: the host's resolvers answer the rest of the world.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, RwLock};

use bollard::models::EndpointSpecModeEnum;
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::proto::op::{Header, MessageType, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::A;
use hickory_server::proto::rr::{DNSClass, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::ServerFuture;
use rand::seq::SliceRandom;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::allocate;
use super::local::{Bridge, TaskEndpoint};
use crate::manager::orchestrator::as_service;
use crate::store::Tables;
use crate::types::Kind;

/// Answers are short-lived: a task that stops must leave them quickly.
/// Docker's embedded DNS says 600 s for the same records; a cache that
/// honours that keeps dialling a stopped task's address for ten minutes
/// (dnsrr, `tasks.`), which shoal's zero-downtime stops cannot allow.
const TTL: u32 = 1;
/// How long a TCP client may keep a connection open between queries.
const TCP_IDLE: std::time::Duration = std::time::Duration::from_secs(10);
/// The engine's fallbacks when the host has no usable resolver.
const ENGINE_DEFAULT_DNS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Names of one network (lower case, no trailing dot) → their addresses.
pub type Zone = HashMap<String, Vec<Ipv4Addr>>;

fn add(zone: &mut Zone, name: &str, ips: &[Ipv4Addr]) {
    let list = zone.entry(name.to_ascii_lowercase()).or_default();
    for ip in ips {
        if !list.contains(ip) {
            list.push(*ip);
        }
    }
}

/// Every network's names, from the store's services and the serving tasks.
pub fn zones(tables: &Tables, tasks: &[TaskEndpoint]) -> HashMap<String, Zone> {
    let mut zones: HashMap<String, Zone> = HashMap::new();
    for service in tables.iter(Kind::Service).filter_map(as_service) {
        let Some(spec) = service.spec.as_ref() else {
            continue;
        };
        let Some(name) = spec.name.as_deref().filter(|n| !n.is_empty()) else {
            continue;
        };
        let service_id = service.id.clone().unwrap_or_default();
        let endpoint = service.endpoint.as_ref();
        let dnsrr = endpoint.and_then(|e| e.spec.as_ref()).and_then(|s| s.mode)
            == Some(EndpointSpecModeEnum::DNSRR);
        for attachment in allocate::attachments(spec) {
            let Some(network) = attachment.target.as_deref() else {
                continue;
            };
            let serving: Vec<Ipv4Addr> = tasks
                .iter()
                .filter(|t| t.service_id == service_id)
                .filter_map(|t| t.networks.get(network).copied())
                .collect();
            let vip: Vec<Ipv4Addr> = endpoint
                .and_then(|e| e.virtual_ips.as_ref())
                .into_iter()
                .flatten()
                .filter(|v| v.network_id.as_deref() == Some(network))
                .filter_map(|v| v.addr.as_deref().and_then(allocate::address_of_cidr))
                .collect();
            // A vip-mode service without its VIP yet is reached directly.
            let front = if dnsrr || vip.is_empty() {
                &serving
            } else {
                &vip
            };
            let zone = zones.entry(network.to_string()).or_default();
            let mut names = vec![name.to_string()];
            names.extend(attachment.aliases.clone().unwrap_or_default());
            for n in names.iter().filter(|n| !n.is_empty()) {
                add(zone, n, front);
                add(zone, &format!("tasks.{n}"), &serving);
            }
        }
    }
    for task in tasks {
        for (network, ip) in &task.networks {
            if let Some(zone) = zones.get_mut(network) {
                add(zone, &task.name, &[*ip]);
            }
        }
    }
    zones
}

/// What the server says to one question.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// Not a name of this network: ask someone else.
    Refused,
    /// A name of this network: its addresses (none for other record types).
    Addresses(Vec<Ipv4Addr>),
}

fn lookup(zone: Option<&Zone>, name: &str, kind: RecordType) -> Answer {
    let key = name.trim_end_matches('.').to_ascii_lowercase();
    match zone.and_then(|z| z.get(&key)) {
        None => Answer::Refused,
        Some(_) if kind != RecordType::A => Answer::Addresses(Vec::new()),
        Some(ips) => Answer::Addresses(ips.clone()),
    }
}

/// Answers the queries that came in on one network's gateway.
struct Handler {
    network: String,
    zones: Arc<RwLock<HashMap<String, Zone>>>,
}

impl Handler {
    fn answer(&self, request: &Request) -> Option<(hickory_server::proto::rr::Name, Answer)> {
        if request.message_type() != MessageType::Query || request.op_code() != OpCode::Query {
            return None;
        }
        let [query] = request.queries() else {
            return None;
        };
        if query.query_class() != DNSClass::IN {
            return None;
        }
        let zones = self.zones.read().ok()?;
        let name = query.original().name().clone();
        let answer = lookup(
            zones.get(&self.network),
            &name.to_ascii(),
            query.query_type(),
        );
        Some((name, answer))
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let sent = match self.answer(request) {
            Some((name, Answer::Addresses(mut ips))) => {
                ips.shuffle(&mut rand::thread_rng());
                let records: Vec<Record> = ips
                    .into_iter()
                    .map(|ip| Record::from_rdata(name.clone(), TTL, RData::A(A(ip))))
                    .collect();
                let mut header = Header::response_from_request(request.header());
                header.set_authoritative(true);
                response_handle
                    .send_response(builder.build(header, records.iter(), [], [], []))
                    .await
            }
            _ => {
                response_handle
                    .send_response(builder.error_msg(request.header(), ResponseCode::Refused))
                    .await
            }
        };
        sent.unwrap_or_else(|error| {
            tracing::debug!(%error, "DNS answer not sent");
            let mut header = Header::response_from_request(request.header());
            header.set_response_code(ResponseCode::ServFail);
            header.into()
        })
    }
}

/// One network's server.
struct Server {
    gateway: Ipv4Addr,
    stop: CancellationToken,
}

/// This node's DNS servers and the names they answer.
pub struct Dns {
    zones: Arc<RwLock<HashMap<String, Zone>>>,
    servers: HashMap<String, Server>,
    /// Networks whose server could not start (warned once each).
    warned: HashSet<String>,
    shutdown: CancellationToken,
    running: TaskTracker,
}

impl Dns {
    pub fn new(shutdown: CancellationToken) -> Dns {
        Dns {
            zones: Arc::default(),
            servers: HashMap::new(),
            warned: HashSet::new(),
            shutdown,
            running: TaskTracker::new(),
        }
    }

    /// Serves `zones` from a server on each bridge's gateway: starts the
    /// missing ones (retrying those that could not bind), stops those of
    /// networks gone.
    pub async fn reconcile(
        &mut self,
        bridges: &HashMap<String, Bridge>,
        zones: HashMap<String, Zone>,
    ) {
        if let Ok(mut current) = self.zones.write() {
            *current = zones;
        }
        self.servers.retain(|network, server| {
            let keep = bridges
                .get(network)
                .is_some_and(|b| b.gateway == server.gateway);
            if !keep {
                server.stop.cancel();
                tracing::debug!(%network, "DNS server stopped");
            }
            keep
        });
        for (network, bridge) in bridges {
            if self.servers.contains_key(network) {
                continue;
            }
            match self.start(network, bridge.gateway).await {
                Ok(server) => {
                    tracing::info!(%network, gateway = %bridge.gateway, "DNS server listening");
                    self.warned.remove(network);
                    self.servers.insert(network.clone(), server);
                }
                Err(error) => {
                    if self.warned.insert(network.clone()) {
                        tracing::warn!(%network, %error, "cannot start the network's DNS server; retrying");
                    }
                }
            }
        }
    }

    async fn start(&self, network: &str, gateway: Ipv4Addr) -> Result<Server, DnsError> {
        let addr = (gateway, 53);
        let bind_error = |source| DnsError::Bind {
            addr: format!("{gateway}:53"),
            source,
        };
        let udp = UdpSocket::bind(addr).await.map_err(bind_error)?;
        let tcp = TcpListener::bind(addr).await.map_err(bind_error)?;
        let mut server = ServerFuture::new(Handler {
            network: network.to_string(),
            zones: self.zones.clone(),
        });
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE);
        let stop = self.shutdown.child_token();
        let stopped = stop.clone();
        self.running.spawn(async move {
            tokio::select! {
                _ = stopped.cancelled() => {}
                result = server.block_until_done() => {
                    if let Err(error) = result {
                        tracing::warn!(%error, "DNS server ended");
                    }
                    return;
                }
            }
            if let Err(error) = server.shutdown_gracefully().await {
                tracing::debug!(%error, "DNS server shutdown");
            }
        });
        Ok(Server { gateway, stop })
    }

    /// Stops every server and waits until their sockets are closed.
    pub async fn stop(self) {
        for server in self.servers.values() {
            server.stop.cancel();
        }
        self.running.close();
        self.running.wait().await;
    }
}

/// A container's `Dns`: shoal's servers on its swarm networks first, then
/// the servers it asked for, or else the host's (as the engine would pick).
pub fn servers_for(gateways: &[Ipv4Addr], requested: Option<Vec<String>>) -> Vec<String> {
    let mut out: Vec<String> = gateways.iter().map(Ipv4Addr::to_string).collect();
    let rest = requested
        .filter(|r| !r.is_empty())
        .unwrap_or_else(host_resolvers);
    for server in rest {
        if !out.contains(&server) {
            out.push(server);
        }
    }
    out
}

/// The host's resolvers as the engine finds them: `/etc/resolv.conf`, or
/// systemd-resolved's upstream list when that only names the local stub;
/// loopback addresses dropped (unreachable from a container); Google's
/// when nothing is left.
fn host_resolvers() -> Vec<String> {
    for path in ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"] {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let found = nameservers(&text);
        if !found.is_empty() {
            return found;
        }
    }
    ENGINE_DEFAULT_DNS.iter().map(|s| s.to_string()).collect()
}

fn nameservers(resolv_conf: &str) -> Vec<String> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter(|a| a.parse::<IpAddr>().is_ok_and(|ip| !ip.is_loopback()))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, Transaction};
    use crate::types::{Object, Timestamp};
    use bollard::models::{
        EndpointSpec, NetworkAttachmentConfig, Service, ServiceEndpoint, ServiceEndpointVirtualIps,
        ServiceSpec, TaskSpec,
    };

    fn service(id: &str, name: &str, mode: EndpointSpecModeEnum, aliases: &[&str]) -> Object {
        let attach = NetworkAttachmentConfig {
            target: Some("n1".into()),
            aliases: Some(aliases.iter().map(|a| a.to_string()).collect()),
            ..Default::default()
        };
        Object::Service(
            Service {
                id: Some(id.into()),
                spec: Some(ServiceSpec {
                    name: Some(name.into()),
                    task_template: Some(TaskSpec {
                        networks: Some(vec![attach]),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                endpoint: Some(ServiceEndpoint {
                    spec: Some(EndpointSpec {
                        mode: Some(mode),
                        ports: None,
                    }),
                    virtual_ips: (mode == EndpointSpecModeEnum::VIP).then(|| {
                        vec![ServiceEndpointVirtualIps {
                            network_id: Some("n1".into()),
                            addr: Some("10.0.1.2/24".into()),
                        }]
                    }),
                    ports: None,
                }),
                ..Default::default()
            }
            .into(),
        )
    }

    fn serving(task: &str, service: &str, ip: [u8; 4]) -> TaskEndpoint {
        TaskEndpoint {
            task_id: task.into(),
            service_id: service.into(),
            name: format!("x.1.{task}"),
            networks: HashMap::from([("n1".to_string(), Ipv4Addr::from(ip))]),
        }
    }

    #[test]
    fn zones_hold_vips_task_addresses_aliases_and_task_names() {
        let store = Store::new();
        let tx = Transaction::new(Timestamp { secs: 1, nanos: 0 })
            .create(service("s1", "web", EndpointSpecModeEnum::VIP, &["www"]))
            .create(service("s2", "rr", EndpointSpecModeEnum::DNSRR, &[]));
        assert!(store.apply(1, &tx).is_ok());
        let tasks = [
            serving("t1", "s1", [10, 0, 1, 130]),
            serving("t2", "s2", [10, 0, 1, 131]),
        ];
        let zones = store.read(|t| zones(t, &tasks));
        let zone = &zones["n1"];
        let ip = |d: u8| vec![Ipv4Addr::new(10, 0, 1, d)];
        assert_eq!(zone["web"], ip(2));
        assert_eq!(zone["www"], ip(2));
        assert_eq!(zone["tasks.web"], ip(130));
        assert_eq!(zone["tasks.www"], ip(130));
        assert_eq!(zone["rr"], ip(131));
        assert_eq!(zone["tasks.rr"], ip(131));
        assert_eq!(zone["x.1.t1"], ip(130));
        assert!(!zones.contains_key("n2"));
    }

    #[test]
    fn names_of_the_network_answer_and_others_are_refused() {
        let mut zone = Zone::new();
        add(&mut zone, "Web", &[Ipv4Addr::new(10, 0, 1, 2)]);
        add(&mut zone, "tasks.web", &[]);
        assert_eq!(
            lookup(Some(&zone), "web.", RecordType::A),
            Answer::Addresses(vec![Ipv4Addr::new(10, 0, 1, 2)])
        );
        assert_eq!(
            lookup(Some(&zone), "WEB", RecordType::AAAA),
            Answer::Addresses(vec![])
        );
        assert_eq!(
            lookup(Some(&zone), "tasks.web.", RecordType::A),
            Answer::Addresses(vec![])
        );
        assert_eq!(
            lookup(Some(&zone), "example.com.", RecordType::A),
            Answer::Refused
        );
        assert_eq!(lookup(None, "web.", RecordType::A), Answer::Refused);
    }

    #[test]
    fn containers_ask_shoal_first_then_their_own_or_the_hosts_servers() {
        let gw = [Ipv4Addr::new(10, 0, 1, 1)];
        assert_eq!(
            servers_for(&gw, Some(vec!["1.1.1.1".into()])),
            vec!["10.0.1.1", "1.1.1.1"]
        );
        let defaulted = servers_for(&gw, None);
        assert_eq!(defaulted[0], "10.0.1.1");
        assert!(defaulted.len() > 1, "{defaulted:?}");
        assert_eq!(
            nameservers("# x\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nsearch a\n"),
            vec!["10.255.255.53"]
        );
    }
}
