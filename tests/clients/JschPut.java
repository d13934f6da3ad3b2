// JSch (com.jcraft.jsch, as in Spring Integration, Camel, and Java batch jobs):
// password login, ChannelSftp.put.
// usage: java -cp jsch.jar:. JschPut HOST PORT USER PASSWORD LOCAL REMOTE
import com.jcraft.jsch.ChannelSftp;
import com.jcraft.jsch.JSch;
import com.jcraft.jsch.Session;

public class JschPut {
    public static void main(String[] args) throws Exception {
        JSch jsch = new JSch();
        Session session = jsch.getSession(args[2], args[0], Integer.parseInt(args[1]));
        session.setPassword(args[3]);
        session.setConfig("StrictHostKeyChecking", "no");
        session.setConfig("PreferredAuthentications", "password");
        session.connect(30000);
        System.out.println("host key: " + session.getHostKey().getType());
        ChannelSftp sftp = (ChannelSftp) session.openChannel("sftp");
        sftp.connect(30000);
        sftp.put(args[4], args[5]);
        sftp.disconnect();
        session.disconnect();
    }
}
