//! `iceoryx2`: iceoryx2 publish-subscribe over shared memory, busy-polling subscriber.
//!
//! The writer process creates an iceoryx2 node, a publish-subscribe service of byte slices
//! (`[u8]`, up to `payload_max` bytes) and one publisher; the reader child opens the same
//! service and creates one subscriber before it reports ready, so the first sample already
//! has a connected subscriber. The service keeps no history and never overflows: a full
//! subscriber buffer (`capacity` samples, like the ring's slot count) makes the publisher
//! retry until the subscriber has taken a sample (`RetryUntilDelivered`), the same
//! back-pressure the other transports apply.
//!
//! Sending loans a sample from the publisher's data segment, copies the harness's staging
//! buffer into it (as the chronicle transport copies its staging buffer into the queue)
//! and sends it; receiving polls `receive()` until a sample arrives and hands the harness
//! the sample's payload in place. Only [`WaitMode::Spin`] is measured: a sleeping iceoryx2
//! subscriber needs a separate event service and a listener, which is a different design
//! to compare.
//!
//! The service is named after the harness's private run directory, so concurrent or
//! leftover runs never share a service.

use std::io;
use std::path::Path;

use chronicle_lab::harness::{ChannelConfig, Receiver, Sender, Transport, WaitMode, staging};
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;
use iceoryx2::service::port_factory::publish_subscribe::PortFactory as PubSubFactory;

type Svc = ipc::Service;

/// The iceoryx2 publish-subscribe transport (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Iceoryx2;

/// Writing end. Fields drop in order: the port before the service before the node.
pub struct IoxTx {
    publisher: Publisher<Svc, [u8], ()>,
    _service: PubSubFactory<Svc, [u8], ()>,
    _node: Node<Svc>,
    stage: Vec<u8>,
}

/// Reading end. Fields drop in order: the port before the service before the node.
pub struct IoxRx {
    subscriber: Subscriber<Svc, [u8], ()>,
    _service: PubSubFactory<Svc, [u8], ()>,
    _node: Node<Svc>,
}

impl std::fmt::Debug for IoxTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoxTx").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for IoxRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoxRx").finish_non_exhaustive()
    }
}

fn iox_err(what: &str, e: impl std::fmt::Debug) -> io::Error {
    io::Error::other(format!("iceoryx2: {what}: {e:?}"))
}

/// A node that leaves signals to the harness (no SIGINT/SIGTERM handler of its own).
fn node() -> io::Result<Node<Svc>> {
    NodeBuilder::new()
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<Svc>()
        .map_err(|e| iox_err("creating a node", e))
}

/// The service name for a run directory: unique per run.
fn service_name(dir: &Path) -> io::Result<ServiceName> {
    let leaf = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "run directory has no name"))?;
    ServiceName::new(&format!("chronicle-compare/{leaf}"))
        .map_err(|e| iox_err("building the service name", e))
}

/// Both ends configure the service identically: one publisher, one subscriber, no
/// history, a subscriber buffer of `capacity` samples, no overflow (back-pressure).
fn service(
    node: &Node<Svc>,
    dir: &Path,
    cfg: &ChannelConfig,
    create: bool,
) -> io::Result<PubSubFactory<Svc, [u8], ()>> {
    let builder = node
        .service_builder(&service_name(dir)?)
        .publish_subscribe::<[u8]>()
        .max_publishers(1)
        .max_subscribers(1)
        .max_nodes(2)
        .history_size(0)
        .subscriber_max_buffer_size(cfg.capacity)
        .subscriber_max_borrowed_samples(1)
        .enable_safe_overflow(false);
    if create {
        builder
            .create()
            .map_err(|e| iox_err("creating the service", e))
    } else {
        builder
            .open()
            .map_err(|e| iox_err("opening the service", e))
    }
}

impl Transport for Iceoryx2 {
    const NAME: &'static str = "iceoryx2";
    type Tx = IoxTx;
    type Rx = IoxRx;

    fn supports(wait: WaitMode) -> bool {
        wait == WaitMode::Spin
    }

    fn create(dir: &Path, cfg: &ChannelConfig) -> io::Result<IoxTx> {
        let node = node()?;
        let service = service(&node, dir, cfg, true)?;
        let publisher = service
            .publisher_builder()
            .initial_max_slice_len(cfg.payload_max)
            .max_loaned_samples(1)
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .create()
            .map_err(|e| iox_err("creating the publisher", e))?;
        Ok(IoxTx {
            publisher,
            _service: service,
            _node: node,
            stage: vec![0; cfg.payload_max],
        })
    }

    fn open(dir: &Path, cfg: &ChannelConfig) -> io::Result<IoxRx> {
        let node = node()?;
        let service = service(&node, dir, cfg, false)?;
        let subscriber = service
            .subscriber_builder()
            .buffer_size(cfg.capacity)
            .create()
            .map_err(|e| iox_err("creating the subscriber", e))?;
        Ok(IoxRx {
            subscriber,
            _service: service,
            _node: node,
        })
    }
}

impl Sender for IoxTx {
    #[inline]
    fn send_with<F: FnOnce(&mut [u8])>(&mut self, len: usize, fill: F) -> io::Result<()> {
        let stage = staging(&mut self.stage, len)?;
        let sample = self
            .publisher
            .loan_slice_uninit(len)
            .map_err(|e| iox_err("loan", e))?;
        fill(stage);
        let delivered = sample
            .write_from_slice(stage)
            .send()
            .map_err(|e| iox_err("send", e))?;
        if delivered == 0 {
            // No subscriber took it: the message is lost, which the harness would only
            // see as a gap; say why instead.
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "iceoryx2: sample delivered to no subscriber",
            ));
        }
        Ok(())
    }
}

impl Receiver for IoxRx {
    #[inline]
    fn recv_with<R, F: FnOnce(&[u8]) -> R>(&mut self, _wait: WaitMode, f: F) -> io::Result<R> {
        loop {
            match self.subscriber.receive() {
                Ok(Some(sample)) => return Ok(f(sample.payload())),
                Ok(None) => std::hint::spin_loop(),
                Err(e) => return Err(iox_err("receive", e)),
            }
        }
    }
}
