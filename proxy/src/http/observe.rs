//! A tower layer that counts every response and times it, with the labels the inner service
//! put on the response (the router knows the route; this layer does not need to).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;

use super::Body;
use crate::metrics::{status_class, Metrics, RequestLabels};

/// What the inner service learned about a request, carried on the response's extensions.
#[derive(Clone, Debug, Default)]
pub struct Labels {
    pub authority: String,
    pub route: String,
    pub src_identity: String,
    pub dst_identity: String,
    /// Whether the request crossed mesh mTLS.
    pub tls: bool,
}

/// Adds [`Observe`] around a service.
#[derive(Clone)]
pub struct ObserveLayer {
    metrics: Arc<Metrics>,
    direction: &'static str,
}

impl ObserveLayer {
    pub fn new(metrics: Arc<Metrics>, direction: &'static str) -> Self {
        ObserveLayer { metrics, direction }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            metrics: self.metrics.clone(),
            direction: self.direction,
        }
    }
}

/// Counts and times the responses of `inner`.
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Arc<Metrics>,
    direction: &'static str,
}

impl<S> tower::Service<Request<Incoming>> for Observe<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let started = Instant::now();
        let fut = self.inner.call(req);
        let metrics = self.metrics.clone();
        let direction = self.direction;
        Box::pin(async move {
            let resp = fut.await?;
            let labels = resp
                .extensions()
                .get::<Labels>()
                .cloned()
                .unwrap_or_default();
            metrics.observe_latency(direction, &labels.authority, started.elapsed());
            metrics
                .requests
                .get_or_create(&RequestLabels {
                    direction,
                    authority: labels.authority,
                    route: labels.route,
                    status_class: status_class(resp.status().as_u16()),
                    src_identity: labels.src_identity,
                    dst_identity: labels.dst_identity,
                    tls: if labels.tls { "true" } else { "false" },
                })
                .inc();
            Ok(resp)
        })
    }
}
