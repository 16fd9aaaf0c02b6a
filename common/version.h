/* version.h - the Factory's version, shown by --version and in User-Agent. */
#ifndef FACTORY_VERSION_H
#define FACTORY_VERSION_H
#ifndef FACTORY_VERSION
#define FACTORY_VERSION "0.1.0"
#endif
#define FACTORY_USER_AGENT "factory/" FACTORY_VERSION
#endif
