"""A static file server limited to RATE_MIB MiB/s per response, so that a large NAR takes long
enough to kill a replica in the middle of its download. Usage: serve.py DIR PORT"""
import http.server
import os
import sys
import time
from functools import partial

RATE = int(os.environ.get("RATE_MIB", "16")) * 1024 * 1024
CHUNK = 256 * 1024


class Throttled(http.server.SimpleHTTPRequestHandler):
    def copyfile(self, source, outputfile):
        start, sent = time.monotonic(), 0
        while chunk := source.read(CHUNK):
            outputfile.write(chunk)
            sent += len(chunk)
            ahead = sent / RATE - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)


if __name__ == "__main__":
    directory, port = sys.argv[1], int(sys.argv[2])
    server = http.server.ThreadingHTTPServer(("", port), partial(Throttled, directory=directory))
    server.serve_forever()
