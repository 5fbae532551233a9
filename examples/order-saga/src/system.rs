//! The three services in one process (the demo and the tests), each on its
//! own tasks exactly as its subcommand runs it alone, and the inventory
//! service scaled out by starting more instances in its group.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::inventory_service::{self, InventoryOptions};
use crate::order_service::OrderService;
use crate::{payment_service, ServiceConfig};

/// A service running on its own task.
pub type Service = JoinHandle<anyhow::Result<()>>;

/// Start one payment instance; it stops when `stop` turns true.
///
/// # Errors
/// PostgreSQL or (after `startup_timeout`) Kafka unreachable.
pub async fn start_payment(
    cfg: &ServiceConfig,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Service> {
    let processor = payment_service::processor(cfg).await?;
    Ok(tokio::spawn(run_until(processor, stop)))
}

/// Start one inventory instance.
///
/// # Errors
/// PostgreSQL or (after `startup_timeout`) Kafka unreachable.
pub async fn start_inventory(
    cfg: &ServiceConfig,
    opts: InventoryOptions,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Service> {
    let processor = inventory_service::processor(cfg, opts).await?;
    Ok(tokio::spawn(run_until(processor, stop)))
}

async fn run_until(
    processor: resilience::Processor,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    processor
        .run(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await?;
    Ok(())
}

/// The whole saga in this process.
#[derive(Debug)]
pub struct System {
    pub cfg: ServiceConfig,
    /// Where the order API listens.
    pub api: SocketAddr,
    /// The options the inventory instances started with.
    pub inventory: InventoryOptions,
    inventory_instances: usize,
    stop: watch::Sender<bool>,
    services: Vec<Service>,
}

impl System {
    /// Create the topics, then start the order service (API on a free
    /// local port), one payment instance and `instances` inventory ones.
    ///
    /// # Errors
    /// Kafka or PostgreSQL unreachable.
    pub async fn start(
        cfg: &ServiceConfig,
        inventory: InventoryOptions,
        instances: usize,
    ) -> anyhow::Result<System> {
        crate::ensure_topics(&cfg.bootstrap, &cfg.topics.all(), crate::PARTITIONS).await?;
        let (stop, stopped) = watch::channel(false);
        let order = OrderService::start(cfg, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let api = order.local_addr();
        let mut system = System {
            cfg: cfg.clone(),
            api,
            inventory,
            inventory_instances: 0,
            services: vec![tokio::spawn(order.run(stopped.clone()))],
            stop,
        };
        system.services.push(start_payment(cfg, stopped).await?);
        for _ in 0..instances {
            system.add_inventory().await?;
        }
        Ok(system)
    }

    /// One more inventory instance in the group (a rebalance follows).
    ///
    /// # Errors
    /// As [`System::start`].
    pub async fn add_inventory(&mut self) -> anyhow::Result<()> {
        self.inventory_instances += 1;
        let opts = InventoryOptions {
            instance: format!("inventory-{}", self.inventory_instances),
            ..self.inventory.clone()
        };
        let service = start_inventory(&self.cfg, opts, self.stop.subscribe()).await?;
        self.services.push(service);
        Ok(())
    }

    pub fn inventory_instances(&self) -> usize {
        self.inventory_instances
    }

    /// Stop every service and wait for each (10 s at most).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for service in self.services {
            match tokio::time::timeout(Duration::from_secs(10), service).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::error!(error = %e, "a service failed"),
                Ok(Err(e)) => tracing::error!(error = %e, "a service panicked"),
                Err(_) => tracing::error!("a service did not stop within 10 s"),
            }
        }
    }
}
