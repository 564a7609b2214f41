/* powercut_fs: a FUSE file system that loses what was never made durable, for
 * tests/integration/test_powercut.sh.
 *
 * It models a disk with a volatile write cache. Every file has two layers in memory: what is
 * durable and what the file reads back now. A write changes only the second; fsync and fdatasync
 * (the FUSE fsync op) make the file's current contents and size durable; a write that carries
 * O_DSYNC (RWF_DSYNC on that write, or O_DSYNC/O_SYNC at open) makes its own bytes durable, the
 * way a FUA write does on a disk. close() does not: the FUSE flush op is a no-op here, as
 * close(2) promises no durability. Writing "cut" to the control file /.powercut is a power cut:
 * every file goes back to its durable layer, and the file system then goes on serving that, as
 * a disk does after power returns. Reading /.powercut gives counters (writes, DSYNC writes,
 * fsyncs, cuts, blocks dropped) so that the test can tell that durability requests arrived.
 *
 * Why FOPEN_DIRECT_IO: every read and write goes to this process, none stays in the page cache
 * (the kernel writeback cache is switched off as well), so the layers see all of spd2's I/O and
 * an O_DIRECT open succeeds. With it the kernel sends no fsync after an RWF_DSYNC write (its
 * direct write path skips generic_write_sync) but passes O_DSYNC in the write's flags, which is
 * why a DSYNC write is made durable here rather than left to an fsync that never comes.
 *
 * Simplifications, none of which weakens the data check: the name space (create, unlink) is
 * durable at once; a file is at most 1 GiB; durability is tracked per 4 KiB block, but a DSYNC
 * write makes only its own bytes durable. One thread (-s): the ops need no locks.
 *
 * Usage: powercut_fs MOUNTPOINT   (stays in the foreground; unmount with fusermount3 -u, or it
 * unmounts itself when it exits, including when its parent dies) */
#define FUSE_USE_VERSION 35

#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <limits.h>
#include <linux/falloc.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOCK_BYTES 4096u
#define FILES_MAX 16
#define FILE_BYTES_MAX (1ull << 30)
#define CONTROL_NAME "/.powercut"

/* One file. For every block b, cur[b] is what reads return and dur[b] what survives a cut
 * (NULL = zeros). A clean block (dirty[b] == 0) shares one buffer between both layers; the first
 * write after it became clean gives cur[b] a copy of its own, so dur[b] is never changed by a
 * plain write. dirty_list holds each dirty block once. */
struct pfile {
  int used;
  char name[NAME_MAX + 1];
  mode_t mode;
  uint64_t cur_size;
  uint64_t dur_size;
  size_t cap; /* blocks in each array */
  uint8_t** cur;
  uint8_t** dur;
  uint8_t* dirty;
  size_t* dirty_list;
  size_t dirty_count;
};

static struct pfile files[FILES_MAX];

static struct {
  unsigned long writes;
  unsigned long dsync_writes;
  unsigned long fsyncs;
  unsigned long fallocates;
  unsigned long cuts;
  unsigned long dropped_blocks;
} stats;

static struct pfile* find_file(const char* path) {
  if (path[0] != '/') return NULL;
  for (int i = 0; i < FILES_MAX; ++i)
    if (files[i].used && strcmp(files[i].name, path + 1) == 0) return &files[i];
  return NULL;
}

static int is_control(const char* path) { return strcmp(path, CONTROL_NAME) == 0; }

static int grow(void** p, size_t old_n, size_t new_n, size_t elem) {
  void* q = realloc(*p, new_n * elem);
  if (!q) return -ENOMEM;
  memset((char*)q + old_n * elem, 0, (new_n - old_n) * elem);
  *p = q;
  return 0;
}

/* Makes the arrays cover `bytes`. Blocks beyond cap are zeros in both layers. */
static int ensure_cap(struct pfile* f, uint64_t bytes) {
  if (bytes > FILE_BYTES_MAX) return -EFBIG;
  size_t need = (size_t)((bytes + BLOCK_BYTES - 1) / BLOCK_BYTES);
  if (need <= f->cap) return 0;
  size_t cap = f->cap ? f->cap : 64;
  while (cap < need) cap *= 2;
  int r;
  if ((r = grow((void**)&f->cur, f->cap, cap, sizeof(*f->cur))) ||
      (r = grow((void**)&f->dur, f->cap, cap, sizeof(*f->dur))) ||
      (r = grow((void**)&f->dirty, f->cap, cap, sizeof(*f->dirty))) ||
      (r = grow((void**)&f->dirty_list, f->cap, cap, sizeof(*f->dirty_list))))
    return r;
  f->cap = cap;
  return 0;
}

static void mark_dirty(struct pfile* f, size_t b) {
  f->dirty[b] = 1;
  f->dirty_list[f->dirty_count++] = b;
}

/* The current layer's buffer of block b, private to it (copied from the durable one when the
 * block was clean). NULL when out of memory. */
static uint8_t* writable_block(struct pfile* f, size_t b) {
  if (!f->dirty[b]) {
    uint8_t* copy = malloc(BLOCK_BYTES);
    if (!copy) return NULL;
    if (f->dur[b])
      memcpy(copy, f->dur[b], BLOCK_BYTES);
    else
      memset(copy, 0, BLOCK_BYTES);
    f->cur[b] = copy;
    mark_dirty(f, b);
  } else if (!f->cur[b]) {
    f->cur[b] = calloc(1, BLOCK_BYTES);
  }
  return f->cur[b];
}

/* Writes [off, off+len) into the current layer; with `dsync` the same bytes go into the
 * durable layer too (a FUA write: durable when it completes, and nothing else with it). */
static int write_range(struct pfile* f, const char* buf, size_t len, uint64_t off, int dsync) {
  uint64_t end = off + len;
  int r = ensure_cap(f, end);
  if (r) return r;
  for (uint64_t pos = off; pos < end;) {
    size_t b = (size_t)(pos / BLOCK_BYTES);
    size_t in = (size_t)(pos % BLOCK_BYTES);
    size_t n = BLOCK_BYTES - in;
    if (n > end - pos) n = (size_t)(end - pos);
    uint8_t* p = writable_block(f, b);
    if (!p) return -ENOMEM;
    memcpy(p + in, buf + (pos - off), n);
    if (dsync) {
      /* The block is dirty now, so dur[b] is not shared with cur[b]. */
      if (!f->dur[b] && !(f->dur[b] = calloc(1, BLOCK_BYTES))) return -ENOMEM;
      memcpy(f->dur[b] + in, buf + (pos - off), n);
    }
    pos += n;
  }
  if (end > f->cur_size) f->cur_size = end;
  if (dsync && end > f->dur_size) f->dur_size = end;
  return 0;
}

/* Zeros [off, off+len) in the current layer (hole punch, zero range, truncation). */
static int zero_range(struct pfile* f, uint64_t off, uint64_t len) {
  uint64_t end = off + len;
  uint64_t limit = (uint64_t)f->cap * BLOCK_BYTES; /* beyond: zeros already */
  if (end > limit) end = limit;
  for (uint64_t pos = off; pos < end;) {
    size_t b = (size_t)(pos / BLOCK_BYTES);
    size_t in = (size_t)(pos % BLOCK_BYTES);
    size_t n = BLOCK_BYTES - in;
    if (n > end - pos) n = (size_t)(end - pos);
    if (n == BLOCK_BYTES) {
      if (f->dirty[b])
        free(f->cur[b]);
      else
        mark_dirty(f, b); /* cur[b] was dur[b]'s buffer: keep it for the durable layer */
      f->cur[b] = NULL;
    } else {
      uint8_t* p = writable_block(f, b);
      if (!p) return -ENOMEM;
      memset(p + in, 0, n);
    }
    pos += n;
  }
  return 0;
}

static int set_size(struct pfile* f, uint64_t size) {
  int r = ensure_cap(f, size);
  if (r) return r;
  /* Bytes beyond the size read as zeros if the file grows again. */
  if (size < f->cur_size && (r = zero_range(f, size, (uint64_t)f->cap * BLOCK_BYTES - size)))
    return r;
  f->cur_size = size;
  return 0;
}

/* fsync/fdatasync: the current layer becomes the durable one. */
static void make_durable(struct pfile* f) {
  for (size_t i = 0; i < f->dirty_count; ++i) {
    size_t b = f->dirty_list[i];
    free(f->dur[b]);
    f->dur[b] = f->cur[b];
    f->dirty[b] = 0;
  }
  f->dirty_count = 0;
  f->dur_size = f->cur_size;
}

/* Power cut: everything not durable is gone. */
static void drop_volatile(struct pfile* f) {
  for (size_t i = 0; i < f->dirty_count; ++i) {
    size_t b = f->dirty_list[i];
    free(f->cur[b]);
    f->cur[b] = f->dur[b];
    f->dirty[b] = 0;
  }
  stats.dropped_blocks += f->dirty_count;
  f->dirty_count = 0;
  f->cur_size = f->dur_size;
}

static void free_file(struct pfile* f) {
  unsigned long dropped = stats.dropped_blocks;
  drop_volatile(f);
  stats.dropped_blocks = dropped; /* not a power cut */
  for (size_t b = 0; b < f->cap; ++b) free(f->dur[b]);
  free(f->cur);
  free(f->dur);
  free(f->dirty);
  free(f->dirty_list);
  memset(f, 0, sizeof(*f));
}

static int stats_text(char* out, size_t cap) {
  unsigned long volatile_blocks = 0;
  for (int i = 0; i < FILES_MAX; ++i) volatile_blocks += files[i].dirty_count;
  return snprintf(out, cap,
                  "writes %lu\ndsync_writes %lu\nfsyncs %lu\nfallocates %lu\ncuts %lu\n"
                  "dropped_blocks %lu\nvolatile_blocks %lu\n",
                  stats.writes, stats.dsync_writes, stats.fsyncs, stats.fallocates, stats.cuts,
                  stats.dropped_blocks, volatile_blocks);
}

/* ---- FUSE operations ---------------------------------------------------------------------- */

static void* pc_init(struct fuse_conn_info* conn, struct fuse_config* cfg) {
  /* Every write must reach this process when it is made, not when the kernel writes back. */
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  cfg->direct_io = 1;
  cfg->kernel_cache = 0;
  /* Sizes change at a cut: never let the kernel answer from a stale attribute. */
  cfg->attr_timeout = 0;
  cfg->entry_timeout = 0;
  cfg->negative_timeout = 0;
  cfg->hard_remove = 1;
  return NULL;
}

static int pc_getattr(const char* path, struct stat* st, struct fuse_file_info* fi) {
  memset(st, 0, sizeof(*st));
  st->st_uid = getuid();
  st->st_gid = getgid();
  st->st_blksize = BLOCK_BYTES;
  if (strcmp(path, "/") == 0) {
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
    return 0;
  }
  if (is_control(path)) {
    st->st_mode = S_IFREG | 0600;
    st->st_nlink = 1;
    return 0;
  }
  struct pfile* f = find_file(path);
  if (!f) return -ENOENT;
  st->st_mode = S_IFREG | (f->mode & 07777);
  st->st_nlink = 1;
  st->st_size = (off_t)f->cur_size;
  st->st_blocks = (blkcnt_t)((f->cur_size + 511) / 512);
  return 0;
}

static int pc_readdir(const char* path, void* buf, fuse_fill_dir_t fill, off_t offset,
                      struct fuse_file_info* fi, enum fuse_readdir_flags flags) {
  if (strcmp(path, "/") != 0) return -ENOTDIR;
  fill(buf, ".", NULL, 0, 0);
  fill(buf, "..", NULL, 0, 0);
  fill(buf, CONTROL_NAME + 1, NULL, 0, 0);
  for (int i = 0; i < FILES_MAX; ++i)
    if (files[i].used) fill(buf, files[i].name, NULL, 0, 0);
  return 0;
}

static void open_reply(struct fuse_file_info* fi) {
  fi->direct_io = 1;
  fi->keep_cache = 0;
}

static int pc_create(const char* path, mode_t mode, struct fuse_file_info* fi) {
  if (is_control(path) || find_file(path)) {
    open_reply(fi);
    return 0;
  }
  const char* name = path + 1;
  if (path[0] != '/' || strchr(name, '/') || strlen(name) > NAME_MAX) return -EINVAL;
  for (int i = 0; i < FILES_MAX; ++i) {
    if (files[i].used) continue;
    files[i].used = 1;
    strcpy(files[i].name, name);
    files[i].mode = mode;
    open_reply(fi);
    return 0;
  }
  return -ENOSPC;
}

static int pc_open(const char* path, struct fuse_file_info* fi) {
  if (!is_control(path) && !find_file(path)) return -ENOENT;
  open_reply(fi);
  return 0;
}

static int pc_read(const char* path, char* buf, size_t size, off_t off, struct fuse_file_info* fi) {
  if (is_control(path)) {
    char text[512];
    int n = stats_text(text, sizeof(text));
    if (off >= n) return 0;
    size_t len = (size_t)(n - off) < size ? (size_t)(n - off) : size;
    memcpy(buf, text + off, len);
    return (int)len;
  }
  struct pfile* f = find_file(path);
  if (!f) return -ENOENT;
  if ((uint64_t)off >= f->cur_size) return 0;
  if (size > f->cur_size - (uint64_t)off) size = (size_t)(f->cur_size - (uint64_t)off);
  for (size_t done = 0; done < size;) {
    uint64_t pos = (uint64_t)off + done;
    size_t b = (size_t)(pos / BLOCK_BYTES);
    size_t in = (size_t)(pos % BLOCK_BYTES);
    size_t n = BLOCK_BYTES - in;
    if (n > size - done) n = size - done;
    if (b < f->cap && f->cur[b])
      memcpy(buf + done, f->cur[b] + in, n);
    else
      memset(buf + done, 0, n);
    done += n;
  }
  return (int)size;
}

static int pc_write(const char* path, const char* buf, size_t size, off_t off,
                    struct fuse_file_info* fi) {
  if (is_control(path)) {
    if (size >= 3 && memcmp(buf, "cut", 3) == 0) {
      unsigned long before = stats.dropped_blocks;
      for (int i = 0; i < FILES_MAX; ++i)
        if (files[i].used) drop_volatile(&files[i]);
      ++stats.cuts;
      fprintf(stderr, "powercut_fs: power cut: %lu volatile blocks dropped\n",
              stats.dropped_blocks - before);
      return (int)size;
    }
    return -EINVAL;
  }
  struct pfile* f = find_file(path);
  if (!f) return -ENOENT;
  /* The kernel puts RWF_DSYNC/RWF_SYNC of this write (and O_DSYNC/O_SYNC of the open) into the
   * request's flags; O_SYNC includes the O_DSYNC bit. */
  int dsync = (fi->flags & O_DSYNC) != 0;
  int r = write_range(f, buf, size, (uint64_t)off, dsync);
  if (r) return r;
  ++stats.writes;
  if (dsync) ++stats.dsync_writes;
  return (int)size;
}

static int pc_truncate(const char* path, off_t size, struct fuse_file_info* fi) {
  if (is_control(path)) return 0;
  struct pfile* f = find_file(path);
  if (!f) return -ENOENT;
  if (size < 0) return -EINVAL;
  return set_size(f, (uint64_t)size);
}

static int pc_fallocate(const char* path, int mode, off_t off, off_t len,
                        struct fuse_file_info* fi) {
  struct pfile* f = find_file(path);
  if (!f) return -ENOENT;
  if (off < 0 || len <= 0) return -EINVAL;
  ++stats.fallocates;
  uint64_t end = (uint64_t)off + (uint64_t)len;
  int keep_size = (mode & FALLOC_FL_KEEP_SIZE) != 0;
  int r = 0;
  switch (mode & ~FALLOC_FL_KEEP_SIZE) {
    case 0: /* allocate: nothing to store, the data does not change */
      break;
    case FALLOC_FL_PUNCH_HOLE: /* the kernel allows it only with KEEP_SIZE */
    case FALLOC_FL_ZERO_RANGE:
      r = zero_range(f, (uint64_t)off, (uint64_t)len);
      break;
    default:
      return -EOPNOTSUPP;
  }
  if (r == 0 && !keep_size && end > f->cur_size) r = set_size(f, end);
  return r;
}

static int pc_fsync(const char* path, int datasync, struct fuse_file_info* fi) {
  ++stats.fsyncs;
  struct pfile* f = find_file(path);
  if (f) make_durable(f);
  return 0;
}

/* close(): not a durability point. */
static int pc_flush(const char* path, struct fuse_file_info* fi) { return 0; }

static int pc_release(const char* path, struct fuse_file_info* fi) { return 0; }

static int pc_unlink(const char* path) {
  struct pfile* f = find_file(path);
  if (!f) return -ENOENT;
  free_file(f);
  return 0;
}

static int pc_utimens(const char* path, const struct timespec tv[2], struct fuse_file_info* fi) {
  return is_control(path) || find_file(path) || strcmp(path, "/") == 0 ? 0 : -ENOENT;
}

/* At unmount: frees every block, so that LeakSanitizer (the ASan build) has nothing to say. */
static void pc_destroy(void* private_data) {
  for (int i = 0; i < FILES_MAX; ++i)
    if (files[i].used) free_file(&files[i]);
}

static const struct fuse_operations ops = {
    .init = pc_init,
    .destroy = pc_destroy,
    .getattr = pc_getattr,
    .readdir = pc_readdir,
    .create = pc_create,
    .open = pc_open,
    .read = pc_read,
    .write = pc_write,
    .truncate = pc_truncate,
    .fallocate = pc_fallocate,
    .fsync = pc_fsync,
    .flush = pc_flush,
    .release = pc_release,
    .unlink = pc_unlink,
    .utimens = pc_utimens,
};

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s MOUNTPOINT\n", argv[0]);
    return 2;
  }
  /* If the test dies, so does the file system (and auto_unmount then unmounts it). */
  pid_t parent = getppid();
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) return 1; /* it died before prctl: no signal will come */
  char opts[] = "fsname=powercut_fs,subtype=powercut,auto_unmount";
  char fg[] = "-f", st[] = "-s", o[] = "-o";
  char* args[] = {argv[0], fg, st, o, opts, argv[1], NULL};
  return fuse_main(6, args, &ops, NULL);
}
