{
  "targets": [
    { "target_name": "tcp_quickack", "sources": ["native/tcp_quickack.c"] }
  ]
}
