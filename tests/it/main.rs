mod interop_sftp;
mod sftp;
