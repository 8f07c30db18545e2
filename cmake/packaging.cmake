# Owns: what `cmake --install` puts on a system besides the binary (the systemd unit, the
# example config as /etc/couchgate/couchgate.yaml, the man page, the Debian docs) and the CPack
# DEB package built from that (`cpack -G DEB` in the build dir; tests/package/run.sh checks it).
# Included at the end of the top-level CMakeLists.txt.
#
# Paths follow Debian 12: units in /lib/systemd/system, config in /etc whatever the prefix.

include(GNUInstallDirs)

set(COUCHGATE_PKG_DIR ${CMAKE_BINARY_DIR}/packaging)
file(MAKE_DIRECTORY ${COUCHGATE_PKG_DIR})

# The unit names the installed binary (deploy/couchgate.service says /usr/local/bin for a
# hand install). Written at install time: `cmake --install --prefix` and CPack (prefix /usr)
# choose the prefix only then.

# Compressed docs, reproducibly (-n: no name or timestamp in the gzip header).
find_program(COUCHGATE_GZIP gzip REQUIRED)
function(couchgate_gzip source output)
  add_custom_command(OUTPUT ${output} COMMAND ${COUCHGATE_GZIP} -9nc ${source} > ${output} DEPENDS ${source} VERBATIM)
endfunction()
couchgate_gzip(${CMAKE_SOURCE_DIR}/deploy/couchgate.8 ${COUCHGATE_PKG_DIR}/couchgate.8.gz)
# Debian's changelog for the package version (required in every non-native package).
string(TIMESTAMP COUCHGATE_PKG_DATE "%a, %d %b %Y %H:%M:%S +0000" UTC)
set(COUCHGATE_DEB_RELEASE 1)
# Whoever publishes the package sets their own address (-DCOUCHGATE_PACKAGE_MAINTAINER=...).
set(COUCHGATE_PACKAGE_MAINTAINER "couchgate maintainers <couchgate@example.org>"
    CACHE STRING "Maintainer field and changelog signature of the .deb")
set(COUCHGATE_MAINTAINER "${COUCHGATE_PACKAGE_MAINTAINER}")
file(WRITE ${COUCHGATE_PKG_DIR}/changelog.Debian
     "couchgate (${PROJECT_VERSION}-${COUCHGATE_DEB_RELEASE}) unstable; urgency=medium\n\n"
     "  * Package built from the couchgate source tree (CPack).\n\n"
     " -- ${COUCHGATE_MAINTAINER}  ${COUCHGATE_PKG_DATE}\n")
couchgate_gzip(${COUCHGATE_PKG_DIR}/changelog.Debian ${COUCHGATE_PKG_DIR}/changelog.Debian.gz)
add_custom_target(couchgate_package_docs ALL DEPENDS ${COUCHGATE_PKG_DIR}/couchgate.8.gz ${COUCHGATE_PKG_DIR}/changelog.Debian.gz)

install(CODE "
  file(READ [[${CMAKE_SOURCE_DIR}/deploy/couchgate.service]] unit)
  string(REPLACE /usr/local/bin/couchgate \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR}/couchgate\" unit \"\${unit}\")
  file(WRITE [[${COUCHGATE_PKG_DIR}/install/couchgate.service]] \"\${unit}\")
  file(INSTALL DESTINATION /lib/systemd/system TYPE FILE FILES [[${COUCHGATE_PKG_DIR}/install/couchgate.service]])
")
install(FILES ${CMAKE_SOURCE_DIR}/deploy/couchgate.example.yaml DESTINATION /etc/couchgate RENAME couchgate.yaml)
install(FILES ${COUCHGATE_PKG_DIR}/couchgate.8.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)
install(FILES ${CMAKE_SOURCE_DIR}/deploy/debian/copyright ${COUCHGATE_PKG_DIR}/changelog.Debian.gz
        DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/couchgate)
# For the operator's Prometheus and Grafana (README, Operations).
install(FILES ${CMAKE_SOURCE_DIR}/deploy/prometheus-alerts.yml ${CMAKE_SOURCE_DIR}/deploy/grafana-dashboard.json
        DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/couchgate)

# ---- CPack: `cd build && cpack -G DEB` --------------------------------------------------
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME couchgate)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_PACKAGE_CONTACT "${COUCHGATE_MAINTAINER}")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE ${COUCHGATE_DEB_RELEASE})
set(CPACK_DEBIAN_PACKAGE_SECTION database)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "per-user CouchDB databases with fan-in and restore")
set(CPACK_PACKAGE_DESCRIPTION
    "couchgate runs beside Apache CouchDB 3.x: it creates a database per user with\n"
    "the policy's _security, replicates every user database into one central\n"
    "database through a bounded number of connections, and rebuilds user databases\n"
    "from the central one. The service is enabled but not started at install: set\n"
    "CouchDB's URL and credentials in /etc/couchgate first.")
string(REPLACE ";" "" CPACK_PACKAGE_DESCRIPTION "${CPACK_PACKAGE_DESCRIPTION}")
# Runtime libraries from dpkg-shlibdeps; adduser for the system user in postinst.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_SOURCE_DIR}/deploy/debian/postinst ${CMAKE_SOURCE_DIR}/deploy/debian/prerm
    ${CMAKE_SOURCE_DIR}/deploy/debian/postrm ${COUCHGATE_PKG_DIR}/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
file(WRITE ${COUCHGATE_PKG_DIR}/conffiles "/etc/couchgate/couchgate.yaml\n")
# Absolute destinations (/etc, /lib/systemd) are intended here.
set(CPACK_WARN_ON_ABSOLUTE_INSTALL_DESTINATION OFF)
include(CPack)

# ---- tests of the above (ctest -R 'package|systemd_verify'); 77 = skipped
if(NOT DEFINED BUILD_TESTING OR BUILD_TESTING)
  add_test(NAME package COMMAND bash ${CMAKE_SOURCE_DIR}/tests/package/run.sh ${CMAKE_BINARY_DIR})
  add_test(NAME systemd_verify COMMAND bash ${CMAKE_SOURCE_DIR}/tests/systemd/verify-unit.sh $<TARGET_FILE:couchgate>)
  set_tests_properties(package systemd_verify PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 600)
endif()
