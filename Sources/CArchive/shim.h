#include <archive.h>
#include <archive_entry.h>
static const unsigned int CA_AE_IFREG = AE_IFREG;
static const unsigned int CA_AE_IFDIR = AE_IFDIR;
static const unsigned int CA_AE_IFLNK = AE_IFLNK;
static const unsigned int CA_AE_IFMT = AE_IFMT;
