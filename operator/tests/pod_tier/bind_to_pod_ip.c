/* LD_PRELOAD shim of the pod tier: a process started with WOODPECKER_POD_IP=<ipv4> that binds an
 * IPv4 socket to 0.0.0.0 binds it to that address instead. In a real pod the network namespace
 * gives each server its own interfaces, so every pod listens on the same ports on 0.0.0.0; here all
 * pods share the host's loopback, and this is what gives each its own address (127.0.x.y). Nothing
 * else changes: explicit addresses, IPv6 and connect() go to libc untouched. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

static bind_fn real_bind;
static struct in_addr pod_ip;
static int have_pod_ip;

__attribute__((constructor)) static void init(void) {
    real_bind = (bind_fn)dlsym(RTLD_NEXT, "bind");
    const char *ip = getenv("WOODPECKER_POD_IP");
    have_pod_ip = ip != NULL && inet_pton(AF_INET, ip, &pod_ip) == 1;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    if (have_pod_ip && addr != NULL && addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)addr;
        if (in->sin_addr.s_addr == htonl(INADDR_ANY)) {
            struct sockaddr_in copy = *in;
            copy.sin_addr = pod_ip;
            return real_bind(fd, (const struct sockaddr *)&copy, sizeof copy);
        }
    }
    return real_bind(fd, addr, len);
}
