"""A real SMTP server (aiosmtpd) on 127.0.0.1 for email tests: STARTTLS required, AUTH checked.

It runs in the test process (aiosmtpd's Controller thread), accepts mail only after STARTTLS with a
certificate from the test's CA and a successful AUTH with the one configured user and password, and
keeps every accepted message and every AUTH attempt for the test to read.
"""

import email
import email.policy
import ssl
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from helpers.services import free_port


class SmtpServer:
    def __init__(self, root, ca, user, password, hostname="localhost"):
        self.user, self.password = user, password
        self.hostname = hostname
        self.port = free_port()
        self.messages = []
        self.auth_attempts = []
        self._lock = threading.Lock()
        cert, key = ca.write(root, "smtp", hostname, hosts=[hostname])
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, server_hostname=hostname,
                                     tls_context=context, require_starttls=True, auth_require_tls=True,
                                     authenticator=self._authenticate, auth_required=True)

    def _authenticate(self, _server, _session, _envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == self.user
              and auth_data.password.decode() == self.password)
        with self._lock:
            self.auth_attempts.append({"mechanism": mechanism, "ok": ok})
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 on failure

    async def handle_DATA(self, _server, session, envelope):  # pylint: disable=invalid-name
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self._lock:
            self.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos), "message": message,
                                  "tls": session.ssl is not None, "authenticated": session.authenticated})
        return "250 OK"

    def start(self):
        self.controller.start()
        return self

    def stop(self):
        self.controller.stop()
