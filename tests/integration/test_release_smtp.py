"""factory-release's email over the secure default: STARTTLS with a CA the
job is told to trust, and credentials that never show (flag-free: from the
environment or a file). Without STARTTLS the send fails loudly; credentials
in clear text to another host are refused before anything is sent."""
import os
import shutil
import subprocess
import tempfile
import unittest

from integration.release_world import World

PASSWORD = "correct-horse-battery-staple-42"


def make_cert(tmp):
    """A self-signed certificate for 127.0.0.1, as CA and server (the openssl
    command: scripts/install-deps.sh test installs it)."""
    key, crt = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return crt, key


class SecureMailTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="release-tls-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.crt, self.key = make_cert(self.tmp)

    def world(self):
        w = World(self, smtp_kwargs={"users": {"releases": PASSWORD}, "tls_cert": self.crt, "tls_key": self.key})
        w.build_first_release()
        return w

    def test_starttls_and_auth_from_a_password_file(self):
        w = self.world()
        pw = os.path.join(self.tmp, "pw")
        with open(pw, "w") as f:
            f.write(PASSWORD + "\n")
        r = w.release(FACTORY_SMTP_TLS="starttls", FACTORY_SMTP_USERNAME="releases", FACTORY_SMTP_PASSWORD_FILE=pw,
                      FACTORY_CA_FILE=self.crt)
        self.assertEqual(r.returncode, 0, r)
        msgs = w.sink.messages()
        self.assertEqual(len(msgs), 3)
        for m in msgs:
            self.assertTrue(m.tls, "sent inside TLS")
            self.assertEqual(m.auth_user, "releases")
        self.assertIn("STARTTLS", w.sink.log())
        self.assertNotIn(PASSWORD, r.output)
        self.assertNotIn(PASSWORD, r.report_md or "")

    def test_password_in_the_environment_is_masked_in_errors(self):
        w = self.world()
        r = w.release(FACTORY_SMTP_TLS="starttls", FACTORY_SMTP_USERNAME="releases",
                      FACTORY_SMTP_PASSWORD="wrong-" + PASSWORD, FACTORY_CA_FILE=self.crt)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("refused the credentials", r.stderr)
        self.assertNotIn(PASSWORD, r.output)
        self.assertEqual(w.sink.messages(), [])
        self.assertIn("state=publishing", w.releases()[0]["description"], "to be finished by the next run")
        r = w.release(FACTORY_SMTP_TLS="starttls", FACTORY_SMTP_USERNAME="releases", FACTORY_SMTP_PASSWORD=PASSWORD,
                      FACTORY_CA_FILE=self.crt)
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(len(w.sink.messages()), 3)

    def test_an_untrusted_certificate_is_refused(self):
        w = self.world()
        r = w.release(FACTORY_SMTP_TLS="starttls", FACTORY_SMTP_USERNAME="releases", FACTORY_SMTP_PASSWORD=PASSWORD)
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(w.sink.messages(), [])


class PlainMailTest(unittest.TestCase):
    def test_starttls_is_required_by_default(self):
        w = World(self)
        w.build_first_release()
        r = w.release(FACTORY_SMTP_TLS=None)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("does not offer STARTTLS", r.stderr)
        self.assertEqual(w.sink.messages(), [])

    def test_credentials_in_clear_only_to_this_machine(self):
        w = World(self)
        r = w.release(FACTORY_SMTP_URL="smtp://mail.example.com:25", FACTORY_SMTP_USERNAME="u",
                      FACTORY_SMTP_PASSWORD=PASSWORD)
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("refusing to send SMTP credentials without TLS", r.stderr)
        self.assertNotIn(PASSWORD, r.output)


if __name__ == "__main__":
    unittest.main()
