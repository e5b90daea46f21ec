{
  "targets": [
    {
      "target_name": "sluice_native",
      "sources": [
        "native/addon.c",
        "native/common.c",
        "native/object.c",
        "native/syscall.c",
        "native/testrun.c",
        "native/net.c",
        "native/ringbuf.c",
        "native/lab.c",
        "native/flock.c",
        "native/notify.c"
      ],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags_c": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
      "libraries": ["-lbpf", "-lelf", "-lz", "-lpthread"]
    }
  ]
}
