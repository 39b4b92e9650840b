#!/usr/bin/env python3
"""Login timing: does a wrong password take longer than an unknown user?

Usage: start sessiond-http with --admin-email admin@example.com --admin-password admin-password-123
on a fresh data dir, then: python3 benches/login_timing.py http://127.0.0.1:PORT [N]
It creates N users, then alternates N wrong-password and N unknown-user logins on the
login-session API (POST /session) and the session-auth API, and prints the medians and how
often the wrong-password attempt of a pair was the slower (50% = indistinguishable)."""
import json, time, urllib.request, statistics, sys, http.cookiejar
BASE = sys.argv[1]
def post(path, body, headers=None, opener=None):
    data = json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method="POST", headers={"content-type": "application/json", **(headers or {})})
    t = time.perf_counter()
    try:
        r = (opener or urllib.request).open(req) if opener else urllib.request.urlopen(req)
        code = r.status; r.read()
    except urllib.error.HTTPError as e:
        code = e.code; e.read()
    return code, (time.perf_counter() - t) * 1000
# admin cookie for the session-auth API
cj = http.cookiejar.CookieJar()
op = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cj))
form = urllib.parse.urlencode({"email": "admin@example.com", "password": "admin-password-123"}).encode()
op.open(urllib.request.Request(BASE + "/api/v1/auth_session/login", data=form, method="POST")).read()
N = int(sys.argv[2]) if len(sys.argv) > 2 else 40
for i in range(N):
    code, _ = post("/api/v1/users", {"email": f"user{i}@example.com", "password": "right-password-1"}, opener=op)
    assert code in (200, 201), code
known, unknown = [], []
codes = set()
for i in range(N):
    if i % 2:
        c1, t1 = post("/session", {"username": f"user{i}@example.com", "password": "wrong-password"})
        c2, t2 = post("/session", {"username": f"nobody{i}@example.com", "password": "wrong-password"})
    else:
        c2, t2 = post("/session", {"username": f"nobody{i}@example.com", "password": "wrong-password"})
        c1, t1 = post("/session", {"username": f"user{i}@example.com", "password": "wrong-password"})
    codes.add((c1, c2)); known.append(t1); unknown.append(t2)
print("login-session API: codes", codes)
print(f"wrong password: median {statistics.median(known):.1f} ms; unknown user: median {statistics.median(unknown):.1f} ms")
# how often does a single pair tell them apart (the wrong-password one slower)?
apart = sum(1 for a, b in zip(known, unknown) if a > b) / N
print(f"wrong-password slower in {apart*100:.0f}% of pairs (50% = indistinguishable); median pairwise difference {statistics.median([a-b for a,b in zip(known,unknown)]):.2f} ms")
def form_login(email):
    data = urllib.parse.urlencode({"email": email, "password": "wrong-password"}).encode()
    req = urllib.request.Request(BASE + "/api/v1/auth_session/login", data=data, method="POST")
    t = time.perf_counter()
    try:
        r = urllib.request.urlopen(req); code = r.status; r.read()
    except urllib.error.HTTPError as e:
        code = e.code; e.read()
    return code, (time.perf_counter() - t) * 1000
known, unknown, codes = [], [], set()
for i in range(N):
    c1, t1 = form_login(f"user{i}@example.com")
    c2, t2 = form_login(f"ghost{i}@example.com")
    codes.add((c1, c2)); known.append(t1); unknown.append(t2)
print("session-auth API: codes", codes)
print(f"wrong password: median {statistics.median(known):.1f} ms; unknown user: median {statistics.median(unknown):.1f} ms")
apart = sum(1 for a, b in zip(known, unknown) if a > b) / N
print(f"wrong-password slower in {apart*100:.0f}% of pairs")
