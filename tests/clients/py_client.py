#!/usr/bin/env python3
"""Python SFTP clients as merchants' scripts and desktop clients use them.

usage: py_client.py MODE HOST PORT USER KEY LOCAL REMOTE

MODE:
  paramiko   paramiko SFTPClient.put() with its defaults (confirm=True: it
             stats the file right after closing it)
  asyncssh   asyncssh put(preserve=True): upload, then SETSTAT times by name
  winscp     WinSCP's default sequence, scripted with paramiko: upload to
             REMOTE.filepart, rename to REMOTE, then SETSTAT times by name
  filezilla  FileZilla's sequence: upload REMOTE, then SETSTAT mtime by name
Exits 0 only if every step succeeded.
"""
import os
import sys
import time


def paramiko_client(host, port, user, key):
    import paramiko

    transport = paramiko.Transport((host, port))
    transport.connect(username=user, pkey=paramiko.Ed25519Key.from_private_key_file(key))
    return transport, paramiko.SFTPClient.from_transport(transport)


def main():
    mode, host, port, user, key, local, remote = sys.argv[1:8]
    port = int(port)
    if mode == "asyncssh":
        import asyncio
        import asyncssh

        async def run():
            async with asyncssh.connect(
                host, port, username=user, client_keys=[key], known_hosts=None
            ) as conn:
                async with conn.start_sftp_client() as sftp:
                    await sftp.put(local, remote, preserve=True)

        asyncio.run(run())
        return
    transport, sftp = paramiko_client(host, port, user, key)
    try:
        if mode == "paramiko":
            sftp.put(local, remote)
        elif mode == "winscp":
            temp = remote + ".filepart"
            sftp.put(local, temp, confirm=False)
            sftp.rename(temp, remote)
            mtime = int(os.stat(local).st_mtime)
            sftp.utime(remote, (mtime, mtime))
        elif mode == "filezilla":
            sftp.put(local, remote, confirm=False)
            sftp.utime(remote, (int(time.time()), int(os.stat(local).st_mtime)))
        else:
            sys.exit(f"unknown mode {mode}")
    finally:
        sftp.close()
        transport.close()


if __name__ == "__main__":
    main()
