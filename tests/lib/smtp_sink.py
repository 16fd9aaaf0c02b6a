"""A small SMTP server for tests (asyncio, stdlib only): it accepts mail on
127.0.0.1 and records every message, so tests can check exactly what a job
sent.  (Python 3.11's smtpd is deprecated and gone in 3.12; this is the
part of RFC 5321 a client like libcurl uses.)

    from lib.smtp_sink import SmtpSink
    with SmtpSink() as sink:                       # sink.url == "smtp://127.0.0.1:PORT"
        ... run the job with FACTORY_SMTP_URL=sink.url, FACTORY_SMTP_TLS=none ...
        for m in sink.messages():                  # in order of acceptance
            m.mail_from, m.rcpt_to, m.raw, m.message (email.message.EmailMessage),
            m.subject, m.text (the decoded body), m.auth_user, m.tls

Commands: EHLO, HELO, STARTTLS (when made with tls_cert/tls_key), AUTH
PLAIN and AUTH LOGIN (when made with users={name: password}; then MAIL is
refused until authenticated), MAIL FROM, RCPT TO, DATA (dot-unstuffed, at
most 10 MiB), RSET, NOOP, QUIT.  Anything else: 502.

Trouble on demand: reject={address} answers 550 to RCPT for those
addresses; tempfail={address: n} answers 451 to the first n RCPTs for an
address; fail_data_times=n answers 451 at the end of DATA n times;
drop_after_data_times=n closes the connection after the data without an
answer n times (the message is recorded as "maybe delivered": m.dropped).
"""
import asyncio
import base64
import email
import email.policy
import ssl
import threading

MAX_DATA = 10 << 20
MAX_LINE = 4096


class Message:
    def __init__(self, mail_from, rcpt_to, raw, auth_user, tls, dropped=False):
        self.mail_from = mail_from
        self.rcpt_to = list(rcpt_to)
        self.raw = raw
        self.auth_user = auth_user
        self.tls = tls
        self.dropped = dropped
        self.message = email.message_from_bytes(raw, policy=email.policy.default)

    @property
    def subject(self):
        return str(self.message["Subject"] or "")

    @property
    def text(self):
        return self.message.get_content()

    def __repr__(self):
        return "<Message from=%s to=%s subject=%r>" % (self.mail_from, self.rcpt_to, self.subject)


class SmtpSink:
    def __init__(self, users=None, tls_cert=None, tls_key=None, reject=(), tempfail=None, fail_data_times=0,
                 drop_after_data_times=0, hostname="sink.test"):
        self.users = dict(users or {})
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.reject = {a.lower() for a in reject}
        self.tempfail = {k.lower(): v for k, v in (tempfail or {}).items()}
        self.fail_data_times = fail_data_times
        self.drop_after_data_times = drop_after_data_times
        self.hostname = hostname
        self._messages = []
        self._log = []
        self._lock = threading.Lock()
        self._loop = None
        self._thread = None
        self._server = None
        self.port = None
        self.url = None

    # ---- lifecycle ----
    def start(self):
        ready = threading.Event()
        errors = []

        def run():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            try:
                self._server = self._loop.run_until_complete(
                    asyncio.start_server(self._session, "127.0.0.1", 0, limit=MAX_LINE * 4))
                self.port = self._server.sockets[0].getsockname()[1]
            except Exception as e:  # pragma: no cover - reported to the caller
                errors.append(e)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()
            self._server.close()
            self._loop.run_until_complete(self._server.wait_closed())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="smtp-sink", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        self.url = "smtp://127.0.0.1:%d" % self.port
        return self

    def stop(self):
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- what tests read ----
    def messages(self):
        with self._lock:
            return list(self._messages)

    def log(self):
        """Every command line received (AUTH arguments masked), in order."""
        with self._lock:
            return list(self._log)

    def clear(self):
        with self._lock:
            self._messages.clear()
            self._log.clear()

    # ---- the protocol ----
    async def _session(self, reader, writer):
        st = {"helo": False, "from": None, "rcpt": [], "auth": None, "tls": False}

        async def reply(line):
            writer.write((line + "\r\n").encode())
            await writer.drain()

        async def readline():
            line = await reader.readline()
            if not line:
                return None
            if len(line) > MAX_LINE:
                return ""
            return line.decode("utf-8", "replace").rstrip("\r\n")

        try:
            await reply("220 %s ESMTP test sink" % self.hostname)
            while True:
                line = await readline()
                if line is None:
                    break
                verb, _, arg = line.partition(" ")
                verb = verb.upper()
                with self._lock:
                    self._log.append(verb + (" ***" if verb == "AUTH" else (" " + arg if arg else "")))
                if verb in ("EHLO", "HELO"):
                    st.update(helo=True, **{"from": None}, rcpt=[])
                    if verb == "HELO":
                        await reply("250 %s" % self.hostname)
                        continue
                    caps = ["250-%s" % self.hostname, "250-8BITMIME", "250-SIZE %d" % MAX_DATA]
                    if self.tls_cert and not st["tls"]:
                        caps.append("250-STARTTLS")
                    if self.users:
                        caps.append("250-AUTH PLAIN LOGIN")
                    caps.append("250 HELP")
                    for c in caps:
                        writer.write((c + "\r\n").encode())
                    await writer.drain()
                elif verb == "STARTTLS" and self.tls_cert and not st["tls"]:
                    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                    ctx.load_cert_chain(self.tls_cert, self.tls_key)
                    await reply("220 ready to start TLS")
                    await writer.start_tls(ctx)
                    st.update(tls=True, helo=False, auth=None)
                elif verb == "AUTH" and self.users:
                    user = await self._auth(arg, reply, readline)
                    if user:
                        st["auth"] = user
                        await reply("235 2.7.0 Authentication successful")
                    else:
                        await reply("535 5.7.8 Authentication credentials invalid")
                elif verb == "MAIL":
                    if not st["helo"]:
                        await reply("503 5.5.1 EHLO first")
                    elif self.users and not st["auth"]:
                        await reply("530 5.7.0 Authentication required")
                    elif not arg.upper().startswith("FROM:"):
                        await reply("501 5.5.4 Syntax: MAIL FROM:<address>")
                    else:
                        st["from"] = _angle(arg[5:])
                        st["rcpt"] = []
                        await reply("250 2.1.0 OK")
                elif verb == "RCPT":
                    if st["from"] is None:
                        await reply("503 5.5.1 MAIL first")
                        continue
                    if not arg.upper().startswith("TO:"):
                        await reply("501 5.5.4 Syntax: RCPT TO:<address>")
                        continue
                    addr = _angle(arg[3:])
                    key = addr.lower()
                    if key in self.reject:
                        await reply("550 5.1.1 No such user")
                    elif self.tempfail.get(key, 0) > 0:
                        self.tempfail[key] -= 1
                        await reply("451 4.3.0 Try again later")
                    else:
                        st["rcpt"].append(addr)
                        await reply("250 2.1.5 OK")
                elif verb == "DATA":
                    if not st["rcpt"]:
                        await reply("503 5.5.1 RCPT first")
                        continue
                    await reply("354 End data with <CR><LF>.<CR><LF>")
                    data = await self._data(reader)
                    if data is None:
                        await reply("552 5.3.4 Message too big")
                        continue
                    if self.drop_after_data_times > 0:
                        self.drop_after_data_times -= 1
                        with self._lock:
                            self._messages.append(Message(st["from"], st["rcpt"], data, st["auth"], st["tls"],
                                                          dropped=True))
                        writer.close()
                        return
                    if self.fail_data_times > 0:
                        self.fail_data_times -= 1
                        await reply("451 4.3.0 Local problem, try again")
                    else:
                        with self._lock:
                            self._messages.append(Message(st["from"], st["rcpt"], data, st["auth"], st["tls"]))
                        await reply("250 2.0.0 OK queued")
                    st["from"] = None
                    st["rcpt"] = []
                elif verb == "RSET":
                    st["from"] = None
                    st["rcpt"] = []
                    await reply("250 2.0.0 OK")
                elif verb == "NOOP":
                    await reply("250 2.0.0 OK")
                elif verb == "QUIT":
                    await reply("221 2.0.0 Bye")
                    break
                else:
                    await reply("502 5.5.2 Command not implemented")
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
            pass  # a client that went away or refused our certificate: its problem, recorded by the test
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def _data(self, reader):
        lines = []
        size = 0
        while True:
            raw = await reader.readline()
            if not raw:
                raise ConnectionError("closed during DATA")
            if raw in (b".\r\n", b".\n"):
                break
            if raw.startswith(b"."):
                raw = raw[1:]
            size += len(raw)
            if size > MAX_DATA:
                return None
            lines.append(raw)
        return b"".join(lines)

    async def _auth(self, arg, reply, readline):
        mech, _, initial = arg.partition(" ")
        mech = mech.upper()
        try:
            if mech == "PLAIN":
                if not initial:
                    await reply("334 ")
                    initial = await readline() or ""
                parts = base64.b64decode(initial).split(b"\0")
                if len(parts) != 3:
                    return None
                user, pw = parts[1].decode(), parts[2].decode()
            elif mech == "LOGIN":
                if initial:
                    user = base64.b64decode(initial).decode()
                else:
                    await reply("334 " + base64.b64encode(b"Username:").decode())
                    user = base64.b64decode(await readline() or "").decode()
                await reply("334 " + base64.b64encode(b"Password:").decode())
                pw = base64.b64decode(await readline() or "").decode()
            else:
                return None
        except (ValueError, UnicodeDecodeError):
            return None
        return user if self.users.get(user) == pw else None


def _angle(s):
    s = s.strip()
    if s.startswith("<"):
        end = s.find(">")
        return s[1:end] if end > 0 else s[1:]
    return s.split(" ", 1)[0]
