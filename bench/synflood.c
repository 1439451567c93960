/* synflood.c - drop-in replacement for shared/bench/udpflood.c whose `tcp` mode sends raw
 * TCP SYNs instead of real connect() calls, so that conntrack-event floods (throughput.py
 * --mode ct) can go well past the ~25-40k connections/s that one socket()+connect() per
 * attempt manages.  bench/compare.py --ct-generator syn compiles it as `udpflood` into a
 * private build dir and hands that to throughput.py with --build-dir.
 *
 *   synflood udp -d DST -p PORT [-c COUNT] [-r PPS] [-t MAXSEC] [-s PAYLOAD] [-b BATCH] [-S SPORT]
 *       exactly udpflood's udp mode (code copied): UDP datagrams with sendmmsg() from one
 *       connected socket; -r 0 = as fast as possible.
 *   synflood tcp -d DST -p PORT [-c COUNT] [-r SYNS] [-t MAXSEC] [-b BATCH] [-S FIRSTPORT] [-a SRC]
 *       bare TCP SYNs (IPv4 or IPv6, 20-byte TCP header, no options) written with a raw
 *       socket (IPPROTO_RAW, i.e. IP_HDRINCL) and sendmmsg(), BATCH per call (default: the
 *       environment variable SYNFLOOD_BATCH if set, else 64 at -r 0, else rate/2000 clamped
 *       to 1..64, so that a batch is <= 0.5 ms worth of traffic).
 *       Source address: -a SRC, else the address the kernel would pick for DST (found with
 *       connect() on a UDP socket; nothing is sent).  Source port: cycles over 1024..65535,
 *       starting at -S (default 1024).  IP and TCP checksums are computed here.
 *       Each SYN to a closed port is a NEW conntrack entry; the RST answer kills it at once
 *       (conntrack: "only reply is a RST"), so every SYN gives a NEW and a DESTROY event.
 *
 * Pacing as udpflood: one batch every BATCH/RATE seconds with clock_nanosleep(ABSTIME),
 * never bursting more than 10 ms worth to catch up.  Stops after COUNT packets or MAXSEC
 * seconds, whichever comes first, and prints udpflood's JSON line: mode, sent, errors,
 * seconds, rate.  Only ever sends to the address given with -d.
 * Build: gcc -O2 -Wall -o udpflood synflood.c   (needs root / CAP_NET_RAW for tcp mode)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_until(double t)
{
	struct timespec ts;
	ts.tv_sec = (time_t)t;
	ts.tv_nsec = (long)((t - ts.tv_sec) * 1e9);
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

/* Wait for the next batch's turn (interval 0: at once); 0 once the time is up. */
static int pace(double *next, double interval, double tend)
{
	double t = now();
	if (t > tend)
		return 0;
	if (interval > 0) {
		if (*next > t)
			sleep_until(*next);
		else if (t - *next > 0.01)
			*next = t; /* never burst more than 10 ms worth */
		*next += interval;
	}
	return 1;
}

static int make_addr(const char *dst, int port, struct sockaddr_storage *ss, socklen_t *len)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, dst, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		*len = sizeof(*s4);
		return AF_INET;
	}
	if (inet_pton(AF_INET6, dst, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		*len = sizeof(*s6);
		return AF_INET6;
	}
	fprintf(stderr, "bad address %s\n", dst);
	exit(2);
}

/* ---------------------------------------------------------------- raw SYNs */

#define PORT_LO 1024
#define PORT_HI 65535

/* one's-complement sum of 16-bit big-endian words (len even) */
static uint32_t sum16(const void *p, size_t len, uint32_t s)
{
	const uint8_t *b = p;
	for (size_t i = 0; i + 1 < len; i += 2)
		s += (uint32_t)b[i] << 8 | b[i + 1];
	return s;
}

static uint16_t fold(uint32_t s)
{
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

struct tcph { /* 20 bytes, no options */
	uint16_t sport, dport;
	uint32_t seq, ack;
	uint8_t off, flags;
	uint16_t win, sum, urg;
};

struct ip4h {
	uint8_t vihl, tos;
	uint16_t len, id, frag;
	uint8_t ttl, proto;
	uint16_t sum;
	uint32_t src, dst;
};

struct ip6h {
	uint32_t vtcfl;
	uint16_t plen;
	uint8_t nxt, hlim;
	struct in6_addr src, dst;
};

/* the source address the kernel would use towards dst (UDP connect: no packet is sent) */
static int route_source(int fam, const struct sockaddr_storage *dst, socklen_t dl, struct sockaddr_storage *src)
{
	int s = socket(fam, SOCK_DGRAM, 0);
	if (s < 0)
		return -1;
	socklen_t l = sizeof(*src);
	int r = connect(s, (const struct sockaddr *)dst, dl) < 0 ||
		getsockname(s, (struct sockaddr *)src, &l) < 0 ? -1 : 0;
	close(s);
	return r;
}

static int syn_flood(int fam, struct sockaddr_storage *ss, socklen_t sl, const char *srcarg, int port,
		     long long count, double rate, double maxsec, int batch, int first_port,
		     long long *sent_out, long long *errors_out)
{
	struct sockaddr_storage src;
	memset(&src, 0, sizeof(src));
	if (srcarg) {
		int sfam = make_addr(srcarg, 0, &src, &(socklen_t){0});
		if (sfam != fam) { fprintf(stderr, "-a and -d must be the same address family\n"); return 2; }
	} else if (route_source(fam, ss, sl, &src) < 0) {
		perror("finding the source address (give one with -a)");
		return 1;
	}
	if (batch <= 0 && getenv("SYNFLOOD_BATCH")) /* throughput.py passes no -b: compare.py --syn-batch */
		batch = atoi(getenv("SYNFLOOD_BATCH"));
	if (batch <= 0) {
		batch = rate <= 0 ? 64 : (int)(rate / 2000);
		if (batch < 1)
			batch = 1;
		if (batch > 64)
			batch = 64;
	}
	if (batch > 1024)
		batch = 1024;
	if (first_port < PORT_LO || first_port > PORT_HI)
		first_port = PORT_LO;

	int s = socket(fam, SOCK_RAW, IPPROTO_RAW); /* IPPROTO_RAW implies IP_HDRINCL (v4 and v6) */
	if (s < 0) { perror("raw socket (needs CAP_NET_RAW)"); return 1; }
	int sb = 4 << 20;
	setsockopt(s, SOL_SOCKET, SO_SNDBUF, &sb, sizeof(sb));
	/* raw sockets take the destination from msg_name; the port must be 0 for IPv6 */
	struct sockaddr_storage to = *ss;
	if (fam == AF_INET6)
		((struct sockaddr_in6 *)&to)->sin6_port = 0;
	else
		((struct sockaddr_in *)&to)->sin_port = 0;

	size_t iplen = fam == AF_INET ? sizeof(struct ip4h) : sizeof(struct ip6h);
	size_t pktlen = iplen + sizeof(struct tcph);
	uint8_t *pkts = calloc(batch, 64);
	struct mmsghdr *msgs = calloc(batch, sizeof(*msgs));
	struct iovec *iov = calloc(batch, sizeof(*iov));
	if (!pkts || !msgs || !iov) { perror("calloc"); return 1; }

	/* header template; the TCP checksum over the pseudo header + header with sport = seq = 0
	 * is summed once, the per-packet fields are added to it */
	uint8_t tmpl[64];
	memset(tmpl, 0, sizeof(tmpl));
	uint32_t tcp_base;
	struct tcph *th = (struct tcph *)(tmpl + iplen);
	th->dport = htons(port);
	th->off = 5 << 4;
	th->flags = 0x02; /* SYN */
	th->win = htons(64240);
	if (fam == AF_INET) {
		struct ip4h *ih = (struct ip4h *)tmpl;
		ih->vihl = 0x45;
		ih->len = htons(pktlen);
		ih->frag = htons(0x4000); /* DF */
		ih->ttl = 64;
		ih->proto = IPPROTO_TCP;
		ih->src = ((struct sockaddr_in *)&src)->sin_addr.s_addr;
		ih->dst = ((struct sockaddr_in *)ss)->sin_addr.s_addr;
		tcp_base = sum16(&ih->src, 8, IPPROTO_TCP + sizeof(struct tcph));
	} else {
		struct ip6h *ih = (struct ip6h *)tmpl;
		ih->vtcfl = htonl(6u << 28);
		ih->plen = htons(sizeof(struct tcph));
		ih->nxt = IPPROTO_TCP;
		ih->hlim = 64;
		ih->src = ((struct sockaddr_in6 *)&src)->sin6_addr;
		ih->dst = ((struct sockaddr_in6 *)ss)->sin6_addr;
		tcp_base = sum16(&ih->src, 32, IPPROTO_TCP + sizeof(struct tcph));
	}
	tcp_base = sum16(th, sizeof(struct tcph), tcp_base);
	for (int i = 0; i < batch; i++) {
		memcpy(pkts + 64 * i, tmpl, pktlen);
		iov[i].iov_base = pkts + 64 * i;
		iov[i].iov_len = pktlen;
		msgs[i].msg_hdr.msg_name = &to;
		msgs[i].msg_hdr.msg_namelen = sl;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}

	long long sent = 0, errors = 0, k = 0; /* k: packets built so far */
	int sp = first_port;
	double t0 = now(), tend = t0 + maxsec, next = t0;
	double interval = rate > 0 ? batch / rate : 0;
	int n = 0; /* packets built and not yet sent (a failed sendmmsg is retried) */
	while (sent < count) {
		if (!pace(&next, interval, tend))
			break;
		if (n == 0) {
			n = (int)(count - sent < batch ? count - sent : batch);
			for (int i = 0; i < n; i++, k++) {
				uint8_t *p = pkts + 64 * i;
				struct tcph *tp = (struct tcph *)(p + iplen);
				uint32_t seq = (uint32_t)(k * 2654435761u); /* spread the ISNs */
				tp->sport = htons(sp);
				tp->seq = htonl(seq);
				tp->sum = 0;
				tp->sum = htons(fold(tcp_base + sp + (seq >> 16) + (seq & 0xffff)));
				if (fam == AF_INET) {
					struct ip4h *ih = (struct ip4h *)p;
					ih->id = htons((uint16_t)k);
					ih->sum = 0;
					ih->sum = htons(fold(sum16(ih, sizeof(*ih), 0)));
				}
				if (++sp > PORT_HI)
					sp = PORT_LO;
			}
		}
		int r = sendmmsg(s, msgs, n, 0);
		if (r < 0) {
			errors++;
			if (errno != ENOBUFS && errno != EAGAIN && errno != EPERM) { perror("sendmmsg"); break; }
			continue;
		}
		sent += r;
		if (r < n) { /* keep the unsent tail at the front for the next call */
			memmove(pkts, pkts + 64 * r, 64 * (size_t)(n - r));
			n -= r;
		} else {
			n = 0;
		}
	}
	close(s);
	*sent_out = sent;
	*errors_out = errors;
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s udp|tcp -d DST -p PORT [-c COUNT] [-r RATE] [-t MAXSEC] [-s SIZE] [-b BATCH] [-S SPORT] [-a SRC]\n", argv[0]);
		return 2;
	}
	const char *mode = argv[1];
	const char *dst = NULL, *srcarg = NULL;
	int port = 0, size = 64, batch = 0, sport = 0, opt;
	long long count = 100000;
	double rate = 0, maxsec = 60;
	optind = 2;
	while ((opt = getopt(argc, argv, "d:p:c:r:t:s:b:S:a:")) != -1) {
		switch (opt) {
		case 'd': dst = optarg; break;
		case 'p': port = atoi(optarg); break;
		case 'c': count = atoll(optarg); break;
		case 'r': rate = atof(optarg); break;
		case 't': maxsec = atof(optarg); break;
		case 's': size = atoi(optarg); break;
		case 'b': batch = atoi(optarg); break;
		case 'S': sport = atoi(optarg); break;
		case 'a': srcarg = optarg; break;
		default: return 2;
		}
	}
	if (!dst || !port) {
		fprintf(stderr, "-d and -p are required\n");
		return 2;
	}
	struct sockaddr_storage ss;
	socklen_t sl;
	int fam = make_addr(dst, port, &ss, &sl);
	long long sent = 0, errors = 0;
	double t0 = now(), tend = t0 + maxsec, next = t0;

	if (!strcmp(mode, "udp")) {
		/* ---- copied from shared/bench/udpflood.c (udp mode), unchanged ---- */
		if (batch <= 0) /* small batches keep low rates smooth */
			batch = rate <= 0 ? 64 : (rate < 2000 ? 1 : (rate < 64000 ? (int)(rate / 2000) : 32));
		if (batch > 1024)
			batch = 1024;
		if (size < 0 || size > 65000)
			size = 64;
		int s = socket(fam, SOCK_DGRAM, 0);
		if (s < 0) { perror("socket"); return 1; }
		int sb = 4 << 20;
		setsockopt(s, SOL_SOCKET, SO_SNDBUF, &sb, sizeof(sb));
		if (sport) {
			struct sockaddr_storage src;
			socklen_t l;
			memset(&src, 0, sizeof(src));
			src.ss_family = fam;
			if (fam == AF_INET) { ((struct sockaddr_in *)&src)->sin_port = htons(sport); l = sizeof(struct sockaddr_in); }
			else { ((struct sockaddr_in6 *)&src)->sin6_port = htons(sport); l = sizeof(struct sockaddr_in6); }
			if (bind(s, (struct sockaddr *)&src, l) < 0) { perror("bind"); return 1; }
		}
		if (connect(s, (struct sockaddr *)&ss, sl) < 0) { perror("connect"); return 1; }
		char *buf = calloc(1, size ? size : 1);
		memcpy(buf, "gbflood", size >= 7 ? 7 : size);
		struct mmsghdr *msgs = calloc(batch, sizeof(*msgs));
		struct iovec iov = { .iov_base = buf, .iov_len = size };
		for (int i = 0; i < batch; i++) {
			msgs[i].msg_hdr.msg_iov = &iov;
			msgs[i].msg_hdr.msg_iovlen = 1;
		}
		double interval = rate > 0 ? batch / rate : 0;
		while (sent < count) {
			if (!pace(&next, interval, tend))
				break;
			int n = (int)(count - sent < batch ? count - sent : batch);
			int r = sendmmsg(s, msgs, n, 0);
			if (r < 0) {
				errors++;
				if (errno != ENOBUFS && errno != EAGAIN && errno != ECONNREFUSED) { perror("sendmmsg"); break; }
				continue;
			}
			sent += r;
		}
		close(s);
	} else if (!strcmp(mode, "tcp")) {
		int rc = syn_flood(fam, &ss, sl, srcarg, port, count, rate, maxsec, batch, sport, &sent, &errors);
		if (rc)
			return rc;
	} else {
		fprintf(stderr, "mode must be udp or tcp\n");
		return 2;
	}
	double el = now() - t0;
	printf("{\"mode\": \"%s\", \"sent\": %lld, \"errors\": %lld, \"seconds\": %.6f, \"rate\": %.1f}\n",
	       mode, sent, errors, el, el > 0 ? sent / el : 0.0);
	return 0;
}
