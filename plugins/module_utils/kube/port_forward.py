# -*- coding: utf-8 -*-
# Copyright: matrix.stack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reach a pod's port through the Kubernetes API (``pods/portforward``), like ``kubectl port-forward``.

Private module util. ``PortForwarder.start()`` picks a ready pod (from a Service's selector and
targetPort, or from a label selector), checks that the API server accepts a port-forward to it, then
listens on an ephemeral 127.0.0.1 port; every accepted TCP connection gets its own port-forward
websocket (``kubernetes.stream.portforward``, channel framing ``v4.channel.k8s.io``) and two pump
directions. The returned ``http://127.0.0.1:<port>`` URL can be used by any HTTP client, so the
Synapse Admin API never has to be exposed outside the cluster.

The Kubernetes client is built by ``kube.client.build_api_client`` (shared with the other modules).
"""

import select
import socket
import threading

from ansible_collections.matrix.stack.plugins.module_utils.kube import client as _kube
from ansible_collections.matrix.stack.plugins.module_utils.kube.errors import KubeError

try:
    from kubernetes.stream import portforward as _k8s_portforward
    HAS_PORTFORWARD = True
except ImportError:  # pragma: no cover - depends on the environment
    _k8s_portforward = None
    HAS_PORTFORWARD = False

PUMP_CHUNK = 64 * 1024


class PortForwardError(Exception):
    """A port-forward could not be set up; the message is fit for an operator."""


def kube_params(params):
    """Map matrix_user's ``kube_*`` options to the option names ``kube.client.build_api_client`` expects."""
    return {
        "kubeconfig": params.get("kubeconfig"),
        "context": params.get("context"),
        "host": params.get("kube_host"),
        "api_key": params.get("kube_api_key"),
        "validate_certs": params.get("kube_validate_certs"),
        "ca_cert": params.get("kube_ca_cert"),
        "client_cert": params.get("kube_client_cert"),
        "client_key": params.get("kube_client_key"),
        "proxy": params.get("kube_proxy"),
    }


def _pod_ready(pod):
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or ())


def _container_port(pod, port):
    """Resolve a named targetPort against the pod's containers; numbers pass through."""
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for container in (pod.get("spec") or {}).get("containers") or ():
        for cport in container.get("ports") or ():
            if cport.get("name") == port:
                return int(cport["containerPort"])
    raise PortForwardError("pod %s has no container port named %r" % (pod["metadata"]["name"], port))


def select_target(service, pods, port):
    """Pick ``(pod_name, container_port)``.

    ``service``: Service dict or None (then ``port`` is the container port). ``pods``: pod dicts.
    """
    target_port = port
    if service is not None:
        name = service["metadata"]["name"]
        ports = (service.get("spec") or {}).get("ports") or ()
        match = [p for p in ports if p.get("port") == port]
        if not match:
            raise PortForwardError("Service %s has no port %d (it has: %s)"
                                   % (name, port, ", ".join(str(p.get("port")) for p in ports) or "none"))
        target_port = match[0].get("targetPort", port)
    ready = sorted((p for p in pods if _pod_ready(p)), key=lambda p: p["metadata"]["name"])
    if not ready:
        names = ", ".join(p["metadata"]["name"] for p in pods) or "none"
        raise PortForwardError("no running and ready pod to forward to (pods matched: %s)" % names)
    pod = ready[0]
    return pod["metadata"]["name"], _container_port(pod, target_port)


def _pump(sock_a, sock_b, stop):
    """Copy bytes both ways until one side closes (half-close aware) or ``stop`` is set."""
    socks = [sock_a, sock_b]
    peer = {sock_a: sock_b, sock_b: sock_a}
    open_in = set(socks)
    try:
        while open_in and not stop.is_set():
            readable = select.select(list(open_in), [], [], 0.5)[0]
            for sock in readable:
                try:
                    data = sock.recv(PUMP_CHUNK)
                except OSError:
                    data = b""
                if data:
                    peer[sock].sendall(data)
                else:
                    open_in.discard(sock)
                    try:
                        peer[sock].shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    if sock is sock_b:  # remote side finished: nothing more will come
                        open_in.clear()
    except OSError:
        pass
    finally:
        for sock in socks:
            try:
                sock.close()
            except OSError:
                pass


def handshake_reason(reason):
    """websocket-client's handshake errors read "Handshake status 403 Forbidden -+-+- {headers} -+-+- body":
    keep the status and the body, drop the response headers."""
    parts = str(reason).split(" -+-+- ")
    if len(parts) >= 3:
        body = parts[-1].strip()
        if body.startswith("b'") or body.startswith('b"'):
            body = body[2:-1]
        return "%s: %s" % (parts[0].strip(), body)
    return str(reason)


class PortForwarder(object):
    def __init__(self, api_client, namespace, service=None, pod_selector=None, port=8008):
        if not HAS_PORTFORWARD:
            raise PortForwardError("the kubernetes Python library is needed for the kube_* options")
        if bool(service) == bool(pod_selector):
            raise PortForwardError("give exactly one of kube_service or kube_pod_selector")
        self.api_client = api_client
        self.namespace = namespace
        self.service = service
        self.pod_selector = pod_selector
        self.port = port
        self.pod = None
        self.container_port = None
        self._listener = None
        self._stop = threading.Event()
        self._threads = []
        self._errors = []

    # -- target ---------------------------------------------------------------------------------
    def _read(self, func, *args, **kwargs):
        response = _kube.kube_call(self.api_client, func, *args, _preload_content=False, **kwargs)
        return _kube.json_response(response)

    def resolve(self):
        api = _kube.core_v1(self.api_client)
        ns = self.namespace
        service = None
        try:
            if self.service:
                service = self._read(api.read_namespaced_service, self.service, ns, action="read",
                                     what="Service %s/%s" % (ns, self.service), namespace=ns)
                selector = (service.get("spec") or {}).get("selector") or {}
                if not selector:
                    raise PortForwardError("Service %s/%s has no selector: cannot find its pods" % (ns, self.service))
                label_selector = ",".join("%s=%s" % kv for kv in sorted(selector.items()))
            else:
                label_selector = self.pod_selector
            pods = self._read(api.list_namespaced_pod, ns, label_selector=label_selector, action="list",
                              what="pods %r in namespace %s" % (label_selector, ns), namespace=ns)
        except KubeError as exc:
            raise PortForwardError("port-forward to the Synapse main process: %s" % exc)
        try:
            self.pod, self.container_port = select_target(service, pods.get("items") or [], self.port)
        except PortForwardError as exc:
            raise PortForwardError("port-forward in namespace %s (%s): %s"
                                   % (ns, "Service " + self.service if self.service else "selector " + self.pod_selector,
                                      exc))
        return self.pod, self.container_port

    # -- forwarding -----------------------------------------------------------------------------
    def open_stream(self):
        """One port-forward websocket; returns ``(PortForward, socket)``. Raises PortForwardError."""
        api = _kube.core_v1(self.api_client)
        try:
            forward = _k8s_portforward(api.connect_get_namespaced_pod_portforward, self.pod, self.namespace,
                                       ports=str(self.container_port))
        except Exception as exc:  # pylint: disable=broad-except
            reason = handshake_reason(getattr(exc, "reason", None) or str(exc) or type(exc).__name__)
            raise PortForwardError(
                "the Kubernetes API server refused the port-forward to pod %s/%s port %s: %s. Port-forwarding "
                "needs the 'create' verb on pods/portforward and a kubelet that serves it on the pod's node."
                % (self.namespace, self.pod, self.container_port, str(reason).strip() or "no reason given"))
        return forward, forward.socket(self.container_port)

    def start(self):
        """Resolve the pod, check a port-forward works, listen locally. Returns the local base URL."""
        self.resolve()
        forward, sock = self.open_stream()  # preflight: fail early with the API server's reason
        sock.close()
        forward.close()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listener.settimeout(0.5)
        self._listener = listener
        thread = threading.Thread(target=self._accept_loop, name="matrix.stack port-forward", daemon=True)
        thread.start()
        self._threads.append(thread)
        return "http://127.0.0.1:%d" % listener.getsockname()[1]

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                conn, _addr = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(None)
            try:
                forward, remote = self.open_stream()
            except PortForwardError as exc:
                self._errors.append(str(exc))
                conn.close()
                continue
            thread = threading.Thread(target=self._pump_and_check, args=(conn, remote, forward), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _pump_and_check(self, conn, remote, forward):
        _pump(conn, remote, self._stop)
        # The API server/kubelet reports failures (e.g. nothing listening on the pod port) on the
        # port's error channel; keep them for the error message of the module.
        try:
            error = forward.error(self.container_port)
        except (ValueError, AttributeError):
            error = None
        if error:
            self._errors.append("pod %s/%s port %s: %s" % (self.namespace, self.pod, self.container_port, error.strip()))

    @property
    def errors(self):
        return list(self._errors)

    def stop(self):
        self._stop.set()
        if self._listener is not None:
            try:
                self._listener.close()
            except OSError:
                pass
        for thread in self._threads:
            thread.join(timeout=2)
        try:
            self.api_client.close()
        except Exception:  # pylint: disable=broad-except
            pass


def forwarder_from_params(params):
    """A PortForwarder from matrix_user / matrix_user_info params (not started)."""
    try:
        api_client = _kube.build_api_client(kube_params(params))
    except KubeError as exc:
        raise PortForwardError("port-forward: %s" % exc)
    return PortForwarder(api_client, params["kube_namespace"], service=params.get("kube_service"),
                         pod_selector=params.get("kube_pod_selector"), port=params.get("kube_port") or 8008)
