/*
 * setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, 1): the one socket option the
 * SMTP layer needs that Node.js does not expose (src/net/quick-ack.ts says
 * why). Returns 0, or the errno of the failed call (ENOTSUP where the
 * platform has no TCP_QUICKACK).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <node_api.h>
#include <sys/socket.h>

static napi_value quick_ack(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd = -1;
  int rc = 0;
  napi_value result;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    rc = EBADF;
  } else {
#ifdef TCP_QUICKACK
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one) != 0) rc = errno;
#else
    rc = ENOTSUP;
#endif
  }
  napi_create_int32(env, rc, &result);
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "quickAck", NAPI_AUTO_LENGTH, quick_ack, NULL, &fn);
  napi_set_named_property(env, exports, "quickAck", fn);
  return exports;
}
