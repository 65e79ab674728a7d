"""A real Django admin for the end-to-end tests, configured as the README tells an
operator to run one behind tether: it trusts X-Forwarded-Proto, its session and CSRF
cookies are Secure, and a small middleware names the signed-in user in a response header
that tether records as the session's owner and strips.

Usage: python console.py DATA_DIR
Prints one line, {"port": N}, once listening on 127.0.0.1; everything else goes to
stderr. Users: alice and mallory, both with the password "correct horse".
"""

import json
import os
import sys
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import django
from django.conf import settings
from django.urls import path

DATA = sys.argv[1] if len(sys.argv) > 1 else "."

settings.configure(
    DEBUG=False,
    SECRET_KEY="tests-only-" + "x" * 40,
    ALLOWED_HOSTS=["localhost", "127.0.0.1"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[
        "django.contrib.admin",
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django.contrib.messages",
    ],
    MIDDLEWARE=[
        "django.middleware.security.SecurityMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        __name__ + ".owner_header",
    ],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.path.join(DATA, "console.sqlite3")}},
    TEMPLATES=[
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "APP_DIRS": True,
            "OPTIONS": {
                "context_processors": [
                    "django.template.context_processors.request",
                    "django.contrib.auth.context_processors.auth",
                    "django.contrib.messages.context_processors.messages",
                ]
            },
        }
    ],
    # Behind tether: the request was HTTPS when tether says so.
    SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"),
    SESSION_COOKIE_SECURE=True,
    CSRF_COOKIE_SECURE=True,
    STATIC_URL="/static/",
    USE_TZ=True,
)


def owner_header(get_response):
    """Names the signed-in user for tether (upstream.user_response_header)."""

    def middleware(request):
        response = get_response(request)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            response["X-Auth-Request-User"] = user.get_username()
        return response

    return middleware


django.setup()

from django.contrib import admin  # noqa: E402  (needs the settings above)
from django.contrib.auth.models import User  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.core.management import call_command  # noqa: E402

urlpatterns = [path("admin/", admin.site.urls)]

call_command("migrate", verbosity=0, interactive=False)
for name in ("alice", "mallory"):
    if not User.objects.filter(username=name).exists():
        User.objects.create_superuser(name, f"{name}@example.com", "correct horse")


class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002
        sys.stderr.write("[console] " + (format % args) + "\n")


server = make_server("127.0.0.1", 0, WSGIHandler(), server_class=Server, handler_class=QuietHandler)
print(json.dumps({"port": server.server_port}), flush=True)


def stop_when_parent_goes():
    # The test holds our stdin open; it closes when the test process ends.
    sys.stdin.read()
    os._exit(0)


threading.Thread(target=stop_when_parent_goes, daemon=True).start()
server.serve_forever()
